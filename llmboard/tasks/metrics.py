"""Metrics as lm-evaluation-harness computes them.

acc: argmax of the log-likelihoods equals the gold index (ties: first choice).
acc_norm: the same on loglikelihood / len(choice in characters).
stderr: sample standard deviation / sqrt(n). Groups (MMLU): the mean of member
scores weighted by their sizes, with lm-eval's pooled stderr.
"""

from __future__ import annotations

import math

from .errors import ScoreError

# what per_doc_metrics computes, and so what a task may ask for
KNOWN_METRICS = frozenset({"acc", "acc_norm"})


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
        pl.col("loglikelihood"),
        pl.col("choice_chars"),
        pl.col("gold").first(),
        pl.col("n_choices").first(),
        pl.len().alias("rows"),
    )
    bad = docs.filter(pl.col("rows") != pl.col("n_choices"))
    if bad.height:
        raise ScoreError(
            f"doc {bad['doc_id'][0]}: {bad['rows'][0]} predictions for "
            f"{bad['n_choices'][0]} choices"
        )
    acc, acc_norm = [], []
    for lls, chars, gold in zip(docs["loglikelihood"], docs["choice_chars"], docs["gold"]):
        lls = np.asarray(lls, dtype=np.float64)
        chars = np.asarray(chars, dtype=np.float64)
        acc.append(float(int(np.argmax(lls)) == gold))
        acc_norm.append(float(int(np.argmax(lls / chars)) == gold))
    return {"doc_id": docs["doc_id"].to_list(), "acc": acc, "acc_norm": acc_norm}


def pooled_stderr(stderr, n):
    """lm-eval's ``pooled_sample_stderr`` for a size-weighted group mean, as a polars
    expression over member rows (``stderr`` and ``n`` are column expressions):
    sqrt(sum((n_i - 1) * se_i^2 * n_i) / (N - k) / N), N = sum n_i, k members."""
    import polars as pl

    return (((n - 1) * stderr**2 * n).sum() / (n.sum() - pl.len()) / n.sum()).sqrt()
