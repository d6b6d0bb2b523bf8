"""Scoring equals lm-eval's metric code on the same log-likelihoods."""

from __future__ import annotations

import json
import math
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


def _scored_subtask(folder, task: str, n_docs: int, right: int, precision: str) -> str:
    """The score file of a 4-choice task of ``n_docs`` documents, ``right`` of them
    answered right (the argmax is choice 0; gold is 0 on the first ``right`` documents)."""
    folder.mkdir(parents=True)
    df = pl.DataFrame(
        [
            {
                "doc_id": d,
                "choice": c,
                "n_choices": 4,
                "gold": 0 if d < right else 1,
                "choice_chars": 1,
                "loglikelihood": -1.0 - c,
            }
            for d in range(n_docs)
            for c in range(4)
        ]
    )
    parquet, info = write_shard(
        folder, 0, 1, df, task=task, n_docs_total=n_docs, precision=precision
    )
    score(
        [parquet],
        [info],
        folder / "score.json",
        model="m",
        metrics=["acc", "acc_norm"],
        primary_metric="acc",
    )
    return str(folder / "score.json")


def test_mmlu_groups_are_size_weighted_with_pooled_stderr(tmp_path):
    """MMLU's categories and MMLU itself are the means of their subjects weighted by their
    numbers of documents (lm-eval's weight_by_size), with lm-eval's pooled stderr, over
    the leaf subjects. Subjects of 3, 20 and 7 documents: an unweighted mean (of the
    subjects, or of the categories) gives other numbers, so it cannot pass."""
    from lm_eval.api.metrics import aggregate_subtask_metrics

    from llmboard.results.leaderboard import build_long
    from llmboard.tasks.definitions import group_spec

    from conftest import REPO

    # task -> (documents, right answers) at each precision; two precisions, kept apart
    subjects = {
        "fp32": {
            "mmlu_abstract_algebra": (3, 2),  # stem
            "mmlu_anatomy": (20, 5),  # stem
            "mmlu_formal_logic": (7, 6),  # humanities
        },
        "bf16": {
            "mmlu_abstract_algebra": (3, 1),
            "mmlu_anatomy": (20, 14),
            "mmlu_formal_logic": (7, 2),
        },
    }
    paths = [
        _scored_subtask(tmp_path / p / t, t, n, k, p)
        for p, tasks in subjects.items()
        for t, (n, k) in tasks.items()
    ]
    # MMLU's own grouping, narrowed to the subjects scored here (a group is only built
    # for a run that scored every one of its members)
    mmlu = group_spec(REPO / "tasks" / "mmlu" / "mmlu.yaml")
    scored = set(subjects["fp32"])
    mmlu["subgroups"] = {
        name: [t for t in members if t in scored]
        for name, members in mmlu["subgroups"].items()
        if scored & set(members)
    }
    assert mmlu["metric"] == "acc" and mmlu["subgroups"] == {
        "mmlu_stem": ["mmlu_abstract_algebra", "mmlu_anatomy"],
        "mmlu_humanities": ["mmlu_formal_logic"],
    }
    groups = {"mmlu": mmlu}
    long = build_long(paths, groups).filter(pl.col("metric") == "acc")
    assert set(long.filter(pl.col("is_group"))["task"]) == {"mmlu", "mmlu_stem", "mmlu_humanities"}

    def se(n, k):  # a subject's stderr: sample sd of its 0/1 scores / sqrt(n)
        return math.sqrt(k * (n - k) / (n * (n - 1)) / n)

    def pooled(members):  # lm-eval 0.4.13's pooled_sample_stderr, written out
        big_n = sum(n for n, _ in members)
        var = sum((n - 1) * se(n, k) ** 2 * n for n, k in members) / (big_n - len(members))
        return math.sqrt(var / big_n)

    def row(precision, task):
        (r,) = long.filter((pl.col("precision") == precision) & (pl.col("task") == task)).iter_rows(
            named=True
        )
        return r

    for precision, tasks in subjects.items():
        aa, an, fl = (
            tasks[t] for t in ("mmlu_abstract_algebra", "mmlu_anatomy", "mmlu_formal_logic")
        )
        for t, (n, k) in tasks.items():  # the subjects themselves, as scored
            assert row(precision, t)["value"] == pytest.approx(k / n, rel=1e-12)
            assert row(precision, t)["stderr"] == pytest.approx(se(n, k), rel=1e-12)
        for group, members in (
            ("mmlu_stem", [aa, an]),
            ("mmlu_humanities", [fl]),
            ("mmlu", [aa, an, fl]),  # over the leaf subjects, as lm-eval's Group.aggregate
        ):
            r = row(precision, group)
            weighted = sum(k / n * n for n, k in members) / sum(n for n, _ in members)
            assert r["is_group"] and r["n"] == sum(n for n, _ in members), group
            assert r["value"] == pytest.approx(weighted, rel=1e-12), group
            assert r["stderr"] == pytest.approx(pooled(members), rel=1e-12), group
            # lm-eval's own functions on the subjects' values, stderrs and sizes agree
            vals = [k / n for n, k in members]
            sizes = [n for n, _ in members]
            ses = [se(n, k) for n, k in members]
            assert r["value"] == pytest.approx(aggregate_subtask_metrics(vals, sizes), rel=1e-12)
            assert r["stderr"] == pytest.approx(pooled_sample_stderr(ses, sizes), rel=1e-12)
        # weighted means of 0/1 scores are the share of all documents answered right
        assert row(precision, "mmlu_stem")["value"] == pytest.approx(
            (aa[1] + an[1]) / 23, rel=1e-12
        )
        assert row(precision, "mmlu")["value"] == pytest.approx(
            (aa[1] + an[1] + fl[1]) / 30, rel=1e-12
        )
        # and an unweighted mean is far from it: of subjects, or of categories
        by_subject = (aa[1] / 3 + an[1] / 20) / 2
        assert abs(row(precision, "mmlu_stem")["value"] - by_subject) > 0.05
        by_subject = (aa[1] / 3 + an[1] / 20 + fl[1] / 7) / 3
        by_category = (
            row(precision, "mmlu_stem")["value"] + row(precision, "mmlu_humanities")["value"]
        ) / 2
        assert abs(row(precision, "mmlu")["value"] - by_subject) > 0.05
        assert abs(row(precision, "mmlu")["value"] - by_category) > 0.05
