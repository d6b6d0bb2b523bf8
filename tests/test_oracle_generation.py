"""Generation against lm-eval 0.4.13 on the real SmolLM2-135M-Instruct in fp32.

lm-eval's own tasks (its YAMLs, on the same documents) and its own ``hf`` model run
``generate_until``; llmboard's prompts go through its engine (shared prefix, refilled
slots). Every generated text must equal lm-eval's, except where lm-eval disagrees with
itself between batch sizes (left padding changes its float sums); those are counted and
must stay rare. Filtered answers and exact_match then come from each side's own code.
"""

from __future__ import annotations

import logging
import time

import polars as pl
import pytest

from llmboard.inference.engine import GenerationRequest, TransformersLM
from llmboard.inference.loading import load_model
from llmboard.tasks.metrics import per_doc_generation_metrics
from llmboard.tasks.prompts import build_generation_requests
from lmeval_oracle import ORACLE, lmeval_generation_task

logging.getLogger("lm_eval").setLevel(logging.ERROR)
LMEVAL_BATCH = 8


@pytest.fixture(scope="module")
def models(smol_dir):
    from lm_eval.models.huggingface import HFLM

    model, tok, _ = load_model(smol_dir, "fp32")
    ours = TransformersLM(model, tok, token_budget=512)  # 8 rows: refills happen
    theirs = HFLM(pretrained=str(smol_dir), dtype="float32", batch_size=LMEVAL_BATCH, device="cpu")
    return ours, theirs


def lmeval_texts(hflm, instances, batch_size: int) -> list[str]:
    hflm.batch_size_per_gpu = batch_size  # the attribute behind its batch_size property
    return hflm.generate_until(instances, disable_tqdm=True)


@pytest.mark.parametrize("name", list(ORACLE))
def test_generations_equal_lmevals(name, models, tmp_path):
    ours_lm, hflm = models
    task, docs, lt = lmeval_generation_task(name, tmp_path)
    n = len(docs)
    reqs = build_generation_requests(task, docs, list(range(n)))
    insts = sorted(lt.instances, key=lambda i: i.doc_id)
    assert [i.args[0] for i in insts] == [r["context"] for r in reqs]  # same prompts

    t0 = time.perf_counter()
    ours = ours_lm.generate_until(
        [GenerationRequest(r["context"], tuple(r["until"]), r["max_gen_toks"]) for r in reqs]
    )
    t1 = time.perf_counter()
    theirs = lmeval_texts(hflm, insts, LMEVAL_BATCH)
    t2 = time.perf_counter()
    differ = [i for i in range(n) if ours[i].text != theirs[i]]
    # lm-eval against itself: one request per batch (no padding) for the documents that
    # differ; a difference counts against llmboard only if lm-eval agrees with itself
    alone = lmeval_texts(hflm, [insts[i] for i in differ], 1) if differ else []
    unstable = [i for i, a in zip(differ, alone) if a != theirs[i]]
    ours_wrong = [i for i in differ if i not in unstable]
    print(
        f"{name}: {n} docs, {n - len(differ)} identical, {len(unstable)} where lm-eval "
        f"differs between batch {LMEVAL_BATCH} and 1, {len(ours_wrong)} others; "
        f"llmboard {t1 - t0:.1f} s, lm-eval {t2 - t1:.1f} s, "
        f"{sum(g.tokens for g in ours)} tokens generated"
    )
    assert not ours_wrong, [(i, ours[i].text, theirs[i]) for i in ours_wrong]
    assert len(unstable) <= max(1, n // 10)
    assert all(g.stop_reason in ("until", "eos", "max_gen_toks") for g in ours)
    assert all(g.tokens <= r["max_gen_toks"] for g, r in zip(ours, reqs))
    if name == "gsm8k_cot":  # long chains of thought: some stop at "Q:", some run out
        assert {g.stop_reason for g in ours} >= {"until", "max_gen_toks"}

    # filters and exact_match: ours on our texts, lm-eval's on its own
    same = [i for i in range(n) if i not in unstable]
    for inst, text in zip(insts, theirs):
        inst.resps, inst.filtered_resps = [text], {}
    lt.apply_filters()
    df = pl.DataFrame(
        {
            "doc_id": list(range(n)),
            "generation": [g.text for g in ours],
            "targets": [r["targets"] for r in reqs],
        }
    )
    scored = per_doc_generation_metrics(df, task.spec)
    for key in task.filter_names:
        for i in same:
            assert scored["answers"][key][i] == insts[i].filtered_resps[key]
            want = lt.process_results(docs[i], [insts[i].filtered_resps[key]])["exact_match"]
            assert scored["metrics"][f"exact_match,{key}"][i] == want
