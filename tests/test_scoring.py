"""Scoring equals lm-eval's metric code on the same log-likelihoods."""

from __future__ import annotations

import json
import random

import numpy as np
import polars as pl
import pytest
from lm_eval.api.metrics import mean_stderr as lm_mean_stderr
from lm_eval.api.metrics import pooled_sample_stderr

from llmboard.tasks.errors import ScoreError
from llmboard.tasks.metrics import mean_stderr, per_doc_metrics, pooled_stderr
from llmboard.tasks.scoring import score


def _frame(rng, n_docs=40, n_choices=4):
    rows = []
    for d in range(n_docs):
        gold = rng.randrange(n_choices)
        for c in range(n_choices):
            rows.append(
                {
                    "doc_id": d,
                    "choice": c,
                    "n_choices": n_choices,
                    "gold": gold,
                    "choice_chars": rng.randrange(1, 40),
                    "loglikelihood": -rng.random() * 20,
                }
            )
    return pl.DataFrame(rows).sample(fraction=1.0, shuffle=True, seed=1)  # any row order


def test_acc_and_acc_norm_as_lmeval_computes_them():
    rng = random.Random(0)
    df = _frame(rng)
    m = per_doc_metrics(df)
    ordered = df.sort(["doc_id", "choice"])
    for d, (acc, accn) in enumerate(zip(m["acc"], m["acc_norm"])):
        g = ordered.filter(pl.col("doc_id") == d)
        lls = np.array(g["loglikelihood"])
        lens = np.array(g["choice_chars"], dtype=float)  # lm-eval: float(len(choice))
        gold = g["gold"][0]
        assert acc == float(np.argmax(lls) == gold)
        assert accn == float(np.argmax(lls / lens) == gold)
    assert mean_stderr(m["acc"]) == pytest.approx(lm_mean_stderr(m["acc"]), rel=1e-12)


def test_ties_go_to_first_choice():
    df = pl.DataFrame(
        {
            "doc_id": [0, 0],
            "choice": [0, 1],
            "n_choices": [2, 2],
            "gold": [0, 0],
            "choice_chars": [3, 3],
            "loglikelihood": [-1.0, -1.0],
        }
    )
    assert per_doc_metrics(df)["acc"] == [1.0]


def test_pooled_stderr_equals_lmeval():
    se, n = [0.03, 0.05, 0.1], [100, 40, 12]
    # the expression the leaderboard aggregates groups with
    ours = (
        pl.DataFrame({"stderr": se, "n": n})
        .select(pooled_stderr(pl.col("stderr"), pl.col("n")))
        .item()
    )
    assert ours == pytest.approx(pooled_sample_stderr(se, n), rel=1e-12)


def write_shard(tmp_path, i, n, df, **meta):
    """A shard's parquet and its info sidecar (``meta`` overrides the fields)."""
    p = tmp_path / f"{i}.parquet"
    df.write_parquet(p)
    info = {
        "task_hash": "t",
        "dataset_fingerprint": "f",
        "checkpoint_sha256": "c",
        "precision": "fp32",
        "n_docs_total": 40,
        "n_shards": n,
        "task": "x",
        "token_budget": 4096,
        "final_token_budget": 4096,
        "seed": 1,
        "device_map": {},
        "llmboard_version": "0",
        "git_commit": None,
        "libraries": {},
        "finished": "t",
        **meta,
    }
    (tmp_path / f"{i}.json").write_text(json.dumps(info))
    return str(p), str(tmp_path / f"{i}.json")


def test_score_merges_shards_and_refuses_gaps_and_stale(tmp_path):
    df = _frame(random.Random(1)).sort(["doc_id", "choice"])
    a = write_shard(tmp_path, 0, 2, df.filter(pl.col("doc_id") < 20))
    b = write_shard(tmp_path, 1, 2, df.filter(pl.col("doc_id") >= 20))
    r = score(
        [a[0], b[0]],
        [a[1], b[1]],
        tmp_path / "s.json",
        model="m",
        metrics=["acc", "acc_norm"],
        primary_metric="acc_norm",
    )
    whole = per_doc_metrics(df)
    assert r["n"] == 40 and r["metrics"]["acc"]["value"] == sum(whole["acc"]) / 40
    with pytest.raises(ScoreError, match="cover 20 of 40 docs"):
        score(
            [a[0]], [a[1]], tmp_path / "s2.json", model="m", metrics=["acc"], primary_metric="acc"
        )
    c = write_shard(tmp_path, 2, 2, df.filter(pl.col("doc_id") >= 20), task_hash="old")
    with pytest.raises(ScoreError, match="task_hash 'old' differs"):
        score(
            [a[0], c[0]],
            [a[1], c[1]],
            tmp_path / "s3.json",
            model="m",
            metrics=["acc"],
            primary_metric="acc",
        )
    assert not (tmp_path / "s2.json").exists() and not (tmp_path / "s3.json").exists()
