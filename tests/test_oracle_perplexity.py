"""lm-evaluation-harness 0.4.13 as the oracle for perplexity, on the real SmolLM2 in fp32:
lambada_openai (lm-eval's own YAML) and rolling perplexity over the same LAMBADA
passages (loglikelihood_rolling, scored as lm-eval's wikitext), at the model's window
and at a 32-token window (several windows per passage)."""

from __future__ import annotations

import math

import polars as pl
import pytest
from lm_eval.api.metrics import bits_per_byte, perplexity, weighted_perplexity
from lm_eval.api.task import ConfigurableTask

from llmboard.tasks.definitions import find_task_files, load_task
from llmboard.tasks.documents import load_docs
from llmboard.tasks.scoring import compute_score
from lmeval_oracle import lmeval_model, run_lmeval_tasks, write_lmeval_perplexity_tasks

from conftest import REPO, predict_task

pytestmark = pytest.mark.slow
INDEX = find_task_files(REPO / "tasks")
N = 12
TOL, REL = 1e-4, 1e-5  # per request, as tests/test_oracle_lmeval.py


def _ours(smol_dir, task, out):
    predict_task(smol_dir, "fp32", task, out / "p.parquet", out / "p.json", token_budget=512)
    df = pl.read_parquet(out / "p.parquet").sort("doc_id")
    score = compute_score(
        [str(out / "p.parquet")],
        [str(out / "p.json")],
        model="smol",
        metrics=task.metrics,
        primary_metric=task.primary_metric,
    )
    return df, score["metrics"]


def _args(sample) -> list:
    """The request's arguments as lm-eval logs them (a list per instance)."""
    a = sample["arguments"][0]
    return list(a.values()) if isinstance(a, dict) else list(a)


def _close(ours: float, theirs: float) -> bool:
    return abs(ours - theirs) <= max(TOL, REL * abs(theirs))


def test_smollm2_perplexity_tasks_match_lm_eval(smol_dir, tmp_path):
    openai = load_task(INDEX["lambada_openai"], {"limit": N})
    docs = load_docs(openai)
    names = write_lmeval_perplexity_tasks(docs, tmp_path / "lmeval")
    lm = lmeval_model(str(smol_dir), batch_size=4)
    ref = run_lmeval_tasks(lm, names, tmp_path / "lmeval")
    report = {}

    # lambada_openai: same requests, log-likelihoods within tolerance, identical acc
    (tmp_path / "a").mkdir()
    df, metrics = _ours(smol_dir, openai, tmp_path / "a")
    samples = sorted(ref[names[0]]["samples"], key=lambda s: s["doc_id"])
    assert len(samples) == df.height == N
    dll = []
    for s, r in zip(samples, df.iter_rows(named=True)):
        ctx, cont = _args(s)
        assert (r["context"], r["continuation"]) == (ctx, cont)
        ll, greedy = s["resps"][0][0]
        assert _close(r["loglikelihood"], float(ll)), (r["doc_id"], r["loglikelihood"], ll)
        assert r["is_greedy"] == bool(greedy)
        dll.append(abs(r["loglikelihood"] - float(ll)))
    res = ref[names[0]]["results"]
    assert metrics["acc"]["value"] == res["acc,none"]
    ours_ll = df["loglikelihood"].to_list()
    theirs_ll = [float(s["resps"][0][0][0]) for s in samples]
    # lm-eval's aggregation on the same log-likelihoods gives our value (1e-6 relative);
    # on its own, its reported value; the two differ only by the log-likelihoods' gap:
    # |d log perplexity| = |d mean ll| <= mean |d ll|
    assert metrics["perplexity"]["value"] == pytest.approx(perplexity(ours_ll), rel=1e-6)
    assert res["perplexity,none"] == pytest.approx(perplexity(theirs_ll), rel=1e-6)
    gap = abs(math.log(metrics["perplexity"]["value"] / res["perplexity,none"]))
    assert gap <= sum(dll) / len(dll) + 1e-12
    report["lambada_openai"] = {
        "rel_diff": abs(metrics["perplexity"]["value"] / res["perplexity,none"] - 1),
        "max_abs_dll": max(dll),
        "acc": (metrics["acc"]["value"], res["acc,none"]),
        "perplexity": (metrics["perplexity"]["value"], res["perplexity,none"]),
    }

    # rolling, at the model's window and at 32 tokens
    for cap in (None, 32):
        task = load_task(INDEX["lambada_rolling"], {"limit": N, "max_length": cap})
        out = tmp_path / f"r{cap}"
        out.mkdir()
        df, metrics = _ours(smol_dir, task, out)
        if cap is None:
            theirs = ref[names[1]]
        else:
            lm._max_length = cap  # HFLM(max_length=32), the same weights
            theirs = run_lmeval_tasks(lm, names[1:], tmp_path / "lmeval")[names[1]]
        samples = sorted(theirs["samples"], key=lambda s: s["doc_id"])
        dll = []
        for s, r in zip(samples, df.iter_rows(named=True)):
            assert r["text"] == _args(s)[0]
            ll = float(s["resps"][0][0])
            assert _close(r["loglikelihood"], ll), (cap, r["doc_id"], r["loglikelihood"], ll)
            dll.append(abs(r["loglikelihood"] - ll))
        if cap:
            assert df["windows"].min() > 1
        # lm-eval's aggregations on our log-likelihoods: our values (1e-6 relative); on its
        # own, its reported values; between the two, at most the log-likelihoods' gap
        texts = df["text"].to_list()
        ours_ll = df["loglikelihood"].to_list()
        theirs_ll = [float(s["resps"][0][0]) for s in samples]
        weights = {
            "word_perplexity": [ConfigurableTask.count_words(t) for t in texts],
            "byte_perplexity": [ConfigurableTask.count_bytes(t) for t in texts],
            "bits_per_byte": [ConfigurableTask.count_bytes(t) for t in texts],
        }
        fns = {
            "word_perplexity": weighted_perplexity,
            "byte_perplexity": weighted_perplexity,
            "bits_per_byte": bits_per_byte,
        }
        entry = {"max_abs_dll": max(dll), "windows": int(df["windows"].sum())}
        for m in task.metrics:
            w, fn, value = weights[m], fns[m], metrics[m]["value"]
            reported = theirs["results"][f"{m},none"]
            assert value == pytest.approx(fn(list(zip(ours_ll, w))), rel=1e-6)
            assert reported == pytest.approx(fn(list(zip(theirs_ll, w))), rel=1e-6)
            bound = sum(dll) / sum(w)  # |d (sum ll / sum w)|
            if m == "bits_per_byte":
                assert abs(value - reported) <= bound / math.log(2) + 1e-12
            else:
                assert abs(math.log(value / reported)) <= bound + 1e-12
            entry[m] = (value, reported, abs(value / reported - 1))
        report[f"lambada_rolling max_length={cap}"] = entry
    for k, v in report.items():
        print(k, v)
