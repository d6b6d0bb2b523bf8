"""Score predictions as lm-evaluation-harness does (cheap; no model involved).

acc: argmax of the log-likelihoods equals the gold index (ties: first choice).
acc_norm: the same on loglikelihood / len(choice in characters).
stderr: sample standard deviation / sqrt(n). Groups (MMLU): the mean of member
scores weighted by their sizes, with lm-eval's pooled stderr.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .atomic import write_json


class ScoreError(RuntimeError):
    pass


def mean_stderr(values: list[float]) -> float:
    n = len(values)
    if n < 2:
        return float("nan")
    mu = sum(values) / n
    return math.sqrt(sum((x - mu) ** 2 for x in values) / (n - 1)) / math.sqrt(n)


def per_doc_metrics(predictions) -> dict[str, list[float]]:
    """From a polars frame of prediction rows: per document acc and acc_norm (0/1)."""
    import numpy as np
    import polars as pl

    df = predictions.sort(["doc_id", "choice"])
    docs = df.group_by("doc_id", maintain_order=True).agg(
        pl.col("loglikelihood"), pl.col("choice_chars"), pl.col("gold").first(),
        pl.col("n_choices").first(), pl.len().alias("rows"))
    bad = docs.filter(pl.col("rows") != pl.col("n_choices"))
    if bad.height:
        raise ScoreError(f"doc {bad['doc_id'][0]}: {bad['rows'][0]} predictions for "
                         f"{bad['n_choices'][0]} choices")
    acc, acc_norm = [], []
    for lls, chars, gold in zip(docs["loglikelihood"], docs["choice_chars"], docs["gold"]):
        lls = np.asarray(lls, dtype=np.float64)
        chars = np.asarray(chars, dtype=np.float64)
        acc.append(float(int(np.argmax(lls)) == gold))
        acc_norm.append(float(int(np.argmax(lls / chars)) == gold))
    return {"doc_id": docs["doc_id"].to_list(), "acc": acc, "acc_norm": acc_norm}


def load_predictions(parquets: list[str], infos: list[str]):
    """Read and check the shards of one model x precision x task."""
    import polars as pl

    metas = [json.loads(Path(p).read_text()) for p in infos]
    if not metas:
        raise ScoreError("no prediction shards given")
    first = metas[0]
    for m, p in zip(metas, infos):
        for key in ("task_hash", "dataset_fingerprint", "checkpoint_sha256", "precision",
                    "n_docs_total", "n_shards"):
            if m[key] != first[key]:
                raise ScoreError(f"{p}: {key} {m[key]!r} differs from {infos[0]}: {first[key]!r}; "
                                 "stale shard, rerun it")
    frames = [pl.read_parquet(p) for p in parquets]
    df = pl.concat(frames)
    got = set(df["doc_id"].unique().to_list())
    want = set(range(first["n_docs_total"]))
    if got != want:
        missing = sorted(want - got)[:5]
        raise ScoreError(f"predictions cover {len(got)} of {len(want)} docs; missing e.g. {missing}")
    return df, metas


def score(parquets: list[str], infos: list[str], out_json, *, model: str, metrics: list[str],
          primary_metric: str) -> dict:
    df, metas = load_predictions(parquets, infos)
    per_doc = per_doc_metrics(df)
    m0 = metas[0]
    result = {
        "model": model,
        "precision": m0["precision"],
        "task": m0["task"],
        "n": len(per_doc["doc_id"]),
        "primary_metric": primary_metric,
        "metrics": {k: {"value": sum(per_doc[k]) / len(per_doc[k]), "stderr": mean_stderr(per_doc[k])}
                    for k in metrics},
        "provenance": {
            "checkpoint_sha256": m0["checkpoint_sha256"],
            "dataset_fingerprint": m0["dataset_fingerprint"],
            "task_hash": m0["task_hash"],
            "precision": m0["precision"],
            "token_budget": sorted({m["token_budget"] for m in metas}),
            "final_token_budget": min(m["final_token_budget"] for m in metas),
            "seed": m0["seed"],
            "device_map": m0["device_map"],
            "llmboard_version": m0["llmboard_version"],
            "git_commit": m0["git_commit"],
            "libraries": m0["libraries"],
            "run_finished": max(m["finished"] for m in metas),
            "shards": len(metas),
        },
    }
    write_json(out_json, result)
    return result


def pooled_stderr(stderrs: list[float], sizes: list[int]) -> float:
    """lm-eval's ``pooled_sample_stderr`` for size-weighted group means."""
    if sum(sizes) - len(sizes) <= 0:
        return float("nan")
    var = sum((n - 1) * se**2 * n for n, se in zip(sizes, stderrs)) / (sum(sizes) - len(sizes))
    return math.sqrt(var / sum(sizes))
