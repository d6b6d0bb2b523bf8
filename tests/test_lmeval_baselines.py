"""The GPU check's baselines (bench/gpu_check/baselines.py) are lm-eval's own algorithms:
run beside lm-eval 0.4.13's ``hf`` model on the same tiny model, they give the same
log-likelihoods, greedy flags and texts, at a fixed batch size and at "auto"."""

from __future__ import annotations

import pytest
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from bench.gpu_check.baselines import (
    LMEVAL_MAX_BATCH,
    lmeval_auto_batch,
    lmeval_generate,
    lmeval_loglikelihoods,
    lmeval_pairs,
)
from bench.gpu_check.common import MODELS
from bench.gpu_check.models import load, save_random_model
from bench.gpu_check.workload import OBJECTS, SUBJECTS, VERBS, make_generation_requests
from llmboard.inference.engine import LoglikelihoodRequest


@pytest.fixture(scope="module")
def tiny(tokenizer_dir, tmp_path_factory):
    # the check's own tiny model, as it builds and loads it
    folder = tmp_path_factory.mktemp("baseline") / "m"
    save_random_model(MODELS["tiny-llama"], tokenizer_dir, folder, "cpu")
    model, tok, _ = load(folder, "fp32")
    return folder, model, tok


def _lmeval(folder, batch_size) -> HFLM:
    return HFLM(pretrained=str(folder), dtype="float32", batch_size=batch_size, device="cpu")


@pytest.mark.parametrize("batch_size", [3, "auto"])
def test_loglikelihoods_are_lmevals(tiny, batch_size):
    folder, model, tok = tiny
    # short contexts (lm-eval's "auto" probes five forwards of 64 rows at the longest),
    # four answers each; one-token answers share their row (lm-eval's logits cache),
    # multi-token ones and an answer with a trailing-space context do not
    requests = [
        LoglikelihoodRequest(f"{s} {v} what?\nAnswer:", a)
        for s, v in zip(SUBJECTS[:4], VERBS)
        for a in (" yes", " no", f" {OBJECTS[0]}", " the wooden clock")
    ] + [LoglikelihoodRequest("Count: one two ", "three four five")]
    theirs = _lmeval(folder, batch_size).loglikelihood(
        [
            Instance("loglikelihood", {}, (r.context, r.continuation), i)
            for i, r in enumerate(requests)
        ],
        disable_tqdm=True,
    )
    pairs = lmeval_pairs(model, tok, requests)
    size = lmeval_auto_batch(model, pairs) if batch_size == "auto" else batch_size
    assert size == (LMEVAL_MAX_BATCH if batch_size == "auto" else 3)  # no OOM on the CPU
    ours = lmeval_loglikelihoods(model, pairs, size)
    assert [ll for ll, _ in ours] == [ll for ll, _ in theirs]  # the same bits
    assert [g for _, g in ours] == [g for _, g in theirs]


def test_generation_is_lmevals(tiny):
    folder, model, tok = tiny
    requests = make_generation_requests(5, 12)
    # a stop string the tiny model writes now and then: some rows stop early, others
    # run to max_gen_toks, and the batch waits for its last row
    # and two generation settings: lm-eval batches each setting's prompts apart
    requests = [
        type(r)(r.context, ("\n\n", "Question:", "e"), r.max_gen_toks - 4 * (i % 2))
        for i, r in enumerate(requests)
    ]
    theirs = _lmeval(folder, 2).generate_until(
        [
            Instance(
                "generate_until",
                {},
                (r.context, {"until": list(r.until), "max_gen_toks": r.max_gen_toks}),
                i,
            )
            for i, r in enumerate(requests)
        ],
        disable_tqdm=True,
    )
    ours, seconds, generated = lmeval_generate(model, tok, requests, 2)
    assert ours == theirs
    assert seconds > 0 and generated >= sum(len(tok.encode(t)) for t in ours)
