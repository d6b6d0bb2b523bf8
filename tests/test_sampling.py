"""Seeded sampling and repeats (pass@k): the engine's draws against transformers' own
``generate(do_sample=True)``, their independence of batching, the task fields, and
pass@k over a document's repeats."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from llmboard.inference.api import GenerationRequest, Sampling, sample_seed
from llmboard.inference.engine import TransformersLM, encode
from llmboard.inference.generation import warp
from llmboard.inference.loading import load_model
from llmboard.tasks.definitions import find_task_files, load_task
from llmboard.tasks.errors import TaskError
from llmboard.tasks.metrics import pass_at_k, per_doc_generation_metrics

from conftest import REPO, generation_task_file

PROMPTS = [
    "Q: How many legs does a spider have?\nA:",
    "Q: Which planet is the largest in the solar system?\nA:",
    "Q: What colour is the sky on a clear day?\nA:",
    "Q: Who wrote Hamlet?\nA:",
    "The quick brown fox",
]
SAMPLING = dict(temperature=0.8, top_p=0.9, top_k=40)


def test_warping_is_hfs():
    """temperature, top-k, top-p as transformers' logits warpers apply them."""
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    g = torch.Generator().manual_seed(0)
    for t, p, k in [(0.7, 0.9, 50), (1.3, 0.5, 0), (0.2, 1.0, 5), (1.0, 0.95, 0)]:
        logits = torch.randn(1, 700, generator=g) * 3
        want = logits.clone()
        warpers = [TemperatureLogitsWarper(t)]
        warpers += [TopKLogitsWarper(k)] if k else []
        warpers += [TopPLogitsWarper(p)] if p < 1 else []
        for w in warpers:
            want = w(None, want)
        got = warp(logits[0], Sampling(t, p, k))
        assert torch.equal(torch.isinf(want[0]), torch.isinf(got))
        assert torch.allclose(want[0].softmax(-1), got.softmax(-1), atol=1e-7)


def hf_sample(model, tok, context: str, max_new: int, s: Sampling) -> list[int]:
    """transformers' generate(do_sample=True) on one prompt, its global generator seeded
    as the engine seeds the request's own."""
    ids = torch.tensor([encode(tok, context)])
    torch.manual_seed(s.seed)
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new,
            min_new_tokens=max_new,
            do_sample=True,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            pad_token_id=tok.eos_token_id,
        )
    return out[0, ids.shape[1] :].tolist()


@pytest.fixture(scope="module")
def tiny(tiny_dirs):
    model, tok, _ = load_model(tiny_dirs["llama"], "fp32")
    return model, tok


def test_samples_are_transformers_own_seeded_draws(tiny):
    """One request alone: the engine draws the same tokens as transformers' sampling
    with the same seed (no stop string can end it: `until` is a string it never writes,
    EOS is suppressed on both sides by min_new_tokens / a long max)."""
    model, tok = tiny
    assert_transformers_draws(TransformersLM(model, tok, token_budget=512))


def assert_transformers_draws(lm, prompts=PROMPTS) -> None:
    """The engine's 12 seeded tokens for each prompt are transformers' own (at least
    three prompts compared: one whose draw holds EOS is left out)."""
    model, tok = lm.model, lm.tokenizer
    compared = 0
    for i, prompt in enumerate(prompts):
        s = Sampling(**SAMPLING, seed=sample_seed(1234, i, 0))
        want = hf_sample(model, tok, prompt, 12, s)
        if tok.eos_token_id in want:
            continue  # HF's min_new_tokens masks EOS; ours would stop there
        (g,) = lm.generate_until([GenerationRequest(prompt, ("\x00never",), 12, s)])
        assert g.tokens == 12
        assert g.text == tok.decode(want, skip_special_tokens=True), prompt
        compared += 1
    assert compared >= 3


def test_a_requests_samples_do_not_depend_on_its_batch(tiny):
    """The same seeded request alone, among others, at other token budgets, in another
    order, beside greedy rows: the same text. Other seeds draw other texts."""
    model, tok = tiny

    def reqs(seed_base: int):
        return [
            GenerationRequest(
                p, ("\n\n",), 16, Sampling(**SAMPLING, seed=sample_seed(seed_base, i, 0))
            )
            for i, p in enumerate(PROMPTS)
        ]

    base = reqs(1234)
    alone = [TransformersLM(model, tok, token_budget=512).generate_until([r])[0].text for r in base]
    for budget in (64, 256, 4096):
        lm = TransformersLM(model, tok, token_budget=budget)
        mixed = [*base[::-1], GenerationRequest(PROMPTS[0], ("\n\n",), 16)]
        got = [g.text for g in lm.generate_until(mixed)][:-1][::-1]
        assert got == alone, budget
    other = [g.text for g in TransformersLM(model, tok, token_budget=512).generate_until(reqs(99))]
    assert other != alone


def test_sample_seeds_are_per_document_and_repeat():
    seeds = {sample_seed(1234, d, r) for d in range(50) for r in range(8)}
    assert len(seeds) == 400
    assert sample_seed(1234, 3, 1) == sample_seed(1234, 3, 1)
    assert sample_seed(1234, 3, 1) != sample_seed(1235, 3, 1)


def _task_file(tmp_path, **fields):
    return generation_task_file(tmp_path, {"q": "1+1=", "a": "2"}, **fields)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"repeats": 4}, "repeats: 4 greedy generations would all be the same"),
        ({"generation_kwargs": {"until": ["\n"], "top_p": 0.9}}, "only apply when sampling"),
        (
            {"generation_kwargs": {"until": ["\n"], "do_sample": True, "temperature": 0}},
            "needs temperature > 0",
        ),
        ({"repeats": 0}, "repeats"),
    ],
)
def test_bad_sampling_fields_name_the_file(tmp_path, fields, message):
    path = _task_file(tmp_path, **fields)
    with pytest.raises(TaskError, match=message) as e:
        load_task(path)
    assert str(path) in str(e.value)


def test_sampling_defaults_are_hfs_and_lmevals(tmp_path):
    t = load_task(_task_file(tmp_path, generation_kwargs={"until": ["\n"], "temperature": 0.5}))
    assert t.sampling == {"temperature": 0.5, "top_p": 1.0, "top_k": 50, "seed": 1234}
    humaneval_64 = load_task(find_task_files(REPO / "tasks")["humaneval_64"])
    assert humaneval_64.repeats == 64
    assert humaneval_64.sampling == {"temperature": 0.2, "top_p": 0.95, "top_k": 50, "seed": 1234}


def test_pass_at_k_over_repeats_from_prediction_rows(sandbox):
    """One row per (document, repeat): each document's programs run, pass@k from them."""
    task = load_task(find_task_files(REPO / "tasks")["humaneval"])
    spec = {
        **task.spec,
        "repeats": 4,
        "metric_list": [{"metric": "pass_at_k", "k": [1, 2, 4]}],
    }
    prompt = "def f(x):\n"
    bodies = [  # doc 0: 2 of 4 right; doc 1: 0 of 4; doc 2: 4 of 4
        ["    return x + 1\n", "    return x\n", "    return x + 1\n", "    return 0\n"],
        ["    return 0\n"] * 4,
        ["    return x + 1\n"] * 4,
    ]
    rows = [
        {
            "doc_id": d,
            "repeat": r,
            "generation": b,
            "targets": ["def check(c):\n    assert c(1) == 2\ncheck(f)"],
            "doc_fields": '{"prompt": "' + prompt.replace("\n", "\\n") + '"}',
        }
        for d, bs in enumerate(bodies)
        for r, b in enumerate(bs)
    ]
    df = pl.DataFrame(rows).sample(fraction=1.0, shuffle=True, seed=3)  # any row order
    code = {"timeout_s": 3.0, "memory_mb": 1024, "processes": 32, "workers": 2}
    out = per_doc_generation_metrics(df, spec, code=code)
    for k in (1, 2, 4):
        assert out["metrics"][f"pass@{k},create_test"] == [
            pass_at_k(4, 2, k),
            0.0,
            1.0,
        ]
    assert [len(d["programs"]) for d in out["details"]["create_test"]] == [4, 4, 4]
    # a document short of a repeat is an error naming it
    from llmboard.tasks.errors import ScoreError

    with pytest.raises(ScoreError, match="doc 1: repeats"):
        per_doc_generation_metrics(
            df.filter(~((pl.col("doc_id") == 1) & (pl.col("repeat") == 3))), spec, code=code
        )
