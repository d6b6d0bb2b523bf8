"""Paired comparisons of two runs on the same documents."""

from __future__ import annotations

import math


def paired_difference(ref: list[float], other: list[float]) -> tuple[float, float]:
    """Mean of ``other - ref`` per document and its standard error (sample sd of the
    differences / sqrt(n)): the paired standard error, much tighter than combining two
    independent ones when the runs agree on most documents."""
    n = len(ref)
    if n == 0:
        return math.nan, math.nan
    d = [y - x for x, y in zip(ref, other)]
    mean = sum(d) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    return mean, sd / math.sqrt(n)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test: ``b`` documents right only in the reference, ``c``
    right only in the other run. Under the null each discordant document is a fair coin,
    so p = min(1, 2 * P(X <= min(b, c))) with X ~ Binomial(b + c, 1/2) (as
    statsmodels' ``mcnemar(exact=True)``); 1.0 when no document is discordant. Computed
    with exact integers."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    # 2 * tail / 2**n: Python divides integers of any size to the nearest float
    return min(1.0, 2 * tail / (1 << n))
