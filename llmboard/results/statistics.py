"""Which differences between leaderboard rows are real: the board's statistical core.

A leaderboard row is (model, prompting, precision). Every row is scored on the same
documents of each task, so two rows are compared *paired*, document by document: the
spread of per-document differences is far smaller than that of two independent means
when rows agree on most documents (Miller 2024, "Adding Error Bars to Evals").

Everything here is a pure, numpy-vectorised function over per-document outcome
matrices; no file I/O, no polars. The unit of input is

- ``outcomes``: a float array ``[rows, docs]`` of one task, 0/1 for accuracy-like metrics
  (``binary=True``), any real value otherwise (a log-likelihood, a BLEU...). NaN marks a
  document that row did not score; pairs are compared on the documents both scored.

Conventions shared by all functions (docstrings give the formulas):

- pair matrices are ``[rows, rows]``, entry ``[i, j]`` is about ``row j - row i``;
- standard errors use the sample sd (ddof=1), as ``report.stats.paired_difference``;
- confidence intervals are normal (``diff +- z * se``), ``level`` two-sided;
- exact McNemar as ``report.stats.mcnemar_exact`` (and statsmodels), for all pairs at once;
- rows sharing fewer than 2 documents raise ``ValueError`` naming the two row indices
  (a standard error needs two documents): nothing returns a NaN silently.

``report.stats`` keeps the scalar versions the precision page uses; this module
computes the same quantities for every pair of a board at once (the tests check both
agree), and adds what a board needs beyond pairs: multiplicity, clustered (grouped)
tasks, the average, rank intervals, equivalence, power and chance normalisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

__all__ = [
    "ADJUST_METHODS",
    "adjust_pvalues",
    "average_difference",
    "chance_of",
    "clustered_mean",
    "clustered_paired",
    "compare_task",
    "from_upper_triangle",
    "minimum_detectable_effect",
    "normalised_score",
    "paired_differences",
    "rank_intervals",
    "tie_groups",
    "tost",
    "upper_triangle",
]

ADJUST_METHODS = ("holm", "bh")

PairStats = dict[str, np.ndarray]


# ------------------------------------------------------------------ checks and helpers
def _check_level(level: float, name: str = "level") -> None:
    """A probability setting must lie strictly inside (0, 1)."""
    if not (0.0 < float(level) < 1.0):
        raise ValueError(f"{name} must be in (0, 1), got {level!r}")


def _as_outcomes(outcomes: np.ndarray, binary: bool) -> np.ndarray:
    """``outcomes`` as a float64 ``[rows, docs]`` array; binary ones must be 0/1/NaN."""
    x = np.asarray(outcomes, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"outcomes must be a [rows, docs] array, got shape {x.shape}")
    if binary:
        ok = np.isnan(x) | (x == 0.0) | (x == 1.0)
        if not ok.all():
            r, d = np.argwhere(~ok)[0]
            raise ValueError(
                f"binary outcomes must be 0, 1 or NaN: row {r}, document {d} is {x[r, d]!r}"
            )
    elif np.isinf(x).any():
        r, d = np.argwhere(np.isinf(x))[0]
        raise ValueError(f"outcomes must be finite or NaN: row {r}, document {d} is {x[r, d]}")
    return x


def normal_quantile(level: float) -> float:
    """Two-sided normal quantile: z_{1-(1-level)/2} (1.959964 for 95 %)."""
    _check_level(level)
    return float(stats.norm.isf((1.0 - level) / 2.0))


def _check_shared(n: np.ndarray, what: str = "documents") -> None:
    """Raise when any pair of rows shares fewer than 2 documents (no paired se)."""
    bad = np.argwhere(n < 2)
    if len(bad) == 0:
        return
    # report an off-diagonal pair when there is one (a row alone with < 2 docs otherwise)
    off = bad[bad[:, 0] != bad[:, 1]]
    i, j = sorted(off[0] if len(off) else bad[0])
    k = int(n[i, j])
    shared = "no" if k == 0 else f"only {k}"
    if i == j:
        raise ValueError(f"row {i} scored {shared} {what}; a standard error needs at least 2")
    raise ValueError(
        f"rows {i} and {j} share {shared} scored {what}; a paired standard error needs at least 2"
    )


def _normal_p(diff: np.ndarray, se: np.ndarray) -> np.ndarray:
    """Two-sided normal p of ``diff / se``; se = 0 gives 1 when diff = 0, else 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(diff) / se
    z = np.where(se > 0, z, np.where(diff == 0, 0.0, np.inf))
    return 2.0 * stats.norm.sf(z)


def _with_ci(out: PairStats, level: float) -> PairStats:
    """Add ``ci_low``/``ci_high`` = diff -+ z_{level} * se (normal interval)."""
    z = normal_quantile(level)
    out["ci_low"] = out["diff"] - z * out["se"]
    out["ci_high"] = out["diff"] + z * out["se"]
    return out


def upper_triangle(matrix: np.ndarray) -> np.ndarray:
    """Entries ``[i, j]`` with i < j of a ``[rows, rows]`` pair matrix, row-major: each
    unordered pair once (what a board adjusts for multiplicity)."""
    m = np.asarray(matrix)
    return m[np.triu_indices(m.shape[0], k=1)]


def from_upper_triangle(values: np.ndarray, rows: int, diagonal: float = 1.0) -> np.ndarray:
    """Inverse of :func:`upper_triangle` for a symmetric statistic (an adjusted p):
    a ``[rows, rows]`` matrix with ``values`` above and below the diagonal."""
    out = np.full((rows, rows), diagonal, dtype=np.float64)
    iu = np.triu_indices(rows, k=1)
    out[iu] = values
    out[iu[1], iu[0]] = values
    return out


# ------------------------------------------------------------ 1. paired differences
def _mcnemar_p(b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Exact two-sided McNemar for arrays of discordant counts: b documents right only
    in row i, c right only in row j. Under H0 each discordant document is a fair coin:
    p = min(1, 2 * BinomCDF(min(b, c); b + c, 1/2)); 1.0 when b + c = 0."""
    m = b + c
    p = np.minimum(1.0, 2.0 * stats.binom.cdf(np.minimum(b, c), m, 0.5))
    return np.where(m == 0, 1.0, p)


def _t_p(diff: np.ndarray, se: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Two-sided paired t-test p: t = diff / se, df = n - 1 (scipy.stats.t).
    se = 0 (all differences equal): p = 1 when they are all 0, else 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(diff) / se
    t = np.where(se > 0, t, np.where(diff == 0, 0.0, np.inf))
    return 2.0 * stats.t.sf(t, np.maximum(df, 1))


def _pair_sums(
    x: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For all pairs on their shared documents: n, sum of d = x_j - x_i, sum of d^2,
    and ``scale`` = sum x_i^2 + sum x_j^2 (what the sum of d^2 was subtracted from).

    With X the values (0 where unscored) and M the 0/1 "scored" matrix, ``P = X @ M.T``
    holds ``P[i, j] = sum_{d shared} x_id``, so ``sum (x_j - x_i) = P[j, i] - P[i, j]``,
    and ``sum (x_j - x_i)^2 = Q[j, i] + Q[i, j] - 2 (X @ X.T)[i, j]`` with
    ``Q = X^2 @ M.T``. For 0/1 values every sum is an exact integer in float64."""
    m = mask.astype(np.float64)
    n, s = _pair_count_sum(x, m)
    q = (x * x) @ m.T
    scale = q.T + q
    return n, s, scale - 2.0 * (x @ x.T), scale


def _pair_count_sum(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shared document counts ``M @ M.T`` and sums of x_j - x_i ``P.T - P`` (P = X @ M.T)
    of every pair (see :func:`_pair_sums`)."""
    m = mask.astype(np.float64)
    p = x @ m.T
    return m @ m.T, p.T - p


# one-pass sums of squares that lost more than log10 of this many digits are redone
_CANCELLATION = 1e4


def _centred_ss(
    x: np.ndarray,
    mask: np.ndarray,
    sums: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    chunk: int = 2048,
) -> np.ndarray:
    """sum_d (d - mean d)^2 for every pair, d = x_j - x_i on shared documents.

    One pass gives ``ss - s^2 / n``, which loses about log10(scale / result) digits
    to cancellation: many for two nearly identical rows (fp32 vs bf16 log-likelihoods).
    Pairs losing more than 4 digits are recomputed in two passes (mean first) from
    their rows, ``chunk`` pairs at a time; the rest keep the one-pass value."""
    n, s, ss, scale = sums
    css = ss - s * (s / np.maximum(n, 1))
    worse = np.triu(scale > _CANCELLATION * np.abs(css), k=1)
    i_all, j_all = np.nonzero(worse)
    for k in range(0, len(i_all), chunk):
        i, j = i_all[k : k + chunk], j_all[k : k + chunk]
        both = mask[i] & mask[j]
        d = np.where(both, x[j] - x[i], 0.0)
        mean = d.sum(axis=1) / np.maximum(both.sum(axis=1), 1)
        exact = (np.where(both, d - mean[:, None], 0.0) ** 2).sum(axis=1)
        css[i, j] = exact
        css[j, i] = exact
    return np.maximum(css, 0.0)


def _masked_mean(x: np.ndarray, mask: np.ndarray, axis: int) -> np.ndarray:
    """Mean of the scored entries along ``axis`` (0 where none is scored)."""
    count = mask.sum(axis=axis)
    return np.where(mask, x, 0.0).sum(axis=axis) / np.maximum(count, 1)


def _centred(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values centred twice, for the one-pass variance of differences (0 if unscored).

    First each document's mean over rows is subtracted: differences between rows are
    unchanged, but the shared level of a document (its difficulty, a log-likelihood of
    -300) no longer costs digits in ``sum d^2 - (sum d)^2 / n``. Then each row's mean
    (``shift``) is subtracted, so a pair's differences have mean ~0 and that
    subtraction loses nothing either; the caller adds ``shift_j - shift_i`` back to
    the mean difference."""
    x0 = np.where(mask, x - _masked_mean(x, mask, axis=0)[None, :], 0.0)
    shift = _masked_mean(x0, mask, axis=1)
    return np.where(mask, x0 - shift[:, None], 0.0), shift


def paired_differences(outcomes: np.ndarray, binary: bool, level: float = 0.95) -> PairStats:
    """Every ordered pair of rows compared on the documents both scored.

    Returns ``[rows, rows]`` arrays, entry ``[i, j]`` about ``x_j - x_i``:

    - ``diff`` = mean_d (x_jd - x_id);  ``n`` = number of shared documents;
    - ``se`` = sd_d(x_jd - x_id) / sqrt(n), ddof=1 (the paired standard error);
    - ``ci_low``, ``ci_high`` = diff -+ z_{1-(1-level)/2} * se (normal);
    - ``p`` two-sided: exact McNemar when ``binary`` (b = #docs right only in i,
      c = #right only in j, b = A @ (1 - A).T over shared docs), else the paired t-test
      (t = diff / se, df = n - 1). With se = 0: p = 1 if diff = 0, else 0 (scipy's
      ttest_rel would give NaN).

    All pairs at once from matrix products (:func:`_pair_sums`); continuous values are
    centred first (:func:`_centred`) so the one-pass variance keeps its digits. Raises
    ``ValueError`` naming the two rows when a pair shares fewer than 2 documents.
    """
    x = _as_outcomes(outcomes, binary)
    normal_quantile(level)  # check the level before any work
    mask = ~np.isnan(x)
    if binary:  # exact integer sums: no centring needed
        x0, shift = np.where(mask, x, 0.0), np.zeros(len(x))
    else:
        x0, shift = _centred(x, mask)
    sums = _pair_sums(x0, mask)
    n, s = sums[0], sums[1]
    _check_shared(n)
    diff = s / n
    css = np.maximum(sums[2] - s * diff, 0.0) if binary else _centred_ss(x0, mask, sums)
    se = np.sqrt(css / (n - 1.0) / n)  # sd of d (ddof=1) / sqrt(n)
    diff = diff + (shift[None, :] - shift[:, None])
    np.fill_diagonal(diff, 0.0)
    np.fill_diagonal(se, 0.0)
    if binary:
        right = x0  # 1 where scored and right
        wrong = np.where(mask, 1.0 - x0, 0.0)
        b = np.rint(right @ wrong.T)  # i right, j wrong
        p = _mcnemar_p(b, b.T)
    else:
        p = _t_p(diff, se, n - 1.0)
    out = {"diff": diff, "se": se, "n": n.astype(np.int64), "p": p}
    return _with_ci(out, level)


# ------------------------------------------------------------- 2. multiplicity
def adjust_pvalues(p: np.ndarray, method: str = "holm") -> np.ndarray:
    """Adjusted p-values for a family of tests (a board: every pair of every task).

    With the N p-values sorted ascending, p_(1) <= ... <= p_(N):

    - ``"holm"`` (Holm 1979, controls the family-wise error rate):
      q_(k) = min(1, max_{m <= k} (N - m + 1) p_(m));
    - ``"bh"`` (Benjamini-Hochberg 1995, controls the false discovery rate):
      q_(k) = min(1, min_{m >= k} N p_(m) / m).

    Computed exactly as statsmodels' ``multipletests(method="holm" | "fdr_bh")``.
    Any shape is accepted (treated as one flat family) and returned in that shape.
    """
    if method not in ADJUST_METHODS:
        raise ValueError(
            f"unknown p-value adjustment method {method!r}; allowed: {', '.join(ADJUST_METHODS)}"
        )
    arr = np.asarray(p, dtype=np.float64)
    flat = arr.ravel()
    if np.isnan(flat).any() or (flat < 0).any() or (flat > 1).any():
        raise ValueError("p-values must lie in [0, 1] (no NaN)")
    n = flat.size
    if n == 0:
        return arr.copy()
    order = np.argsort(flat)
    srt = flat[order]
    if method == "holm":
        adj = np.maximum.accumulate(srt * np.arange(n, 0, -1))
    else:
        adj = np.minimum.accumulate((srt / (np.arange(1, n + 1) / float(n)))[::-1])[::-1]
    adj = np.minimum(adj, 1.0)
    out = np.empty_like(adj)
    out[order] = adj
    return out.reshape(arr.shape)


# ------------------------------------------------------- 3. clustered (grouped) tasks
def _stack_clusters(parts: Sequence[np.ndarray], binary: bool = False) -> list[np.ndarray]:
    """The non-empty subtasks of a group as float64 ``[rows, docs_k]`` arrays, with the
    same number of rows each."""
    if len(parts) == 0:
        raise ValueError("a grouped task needs at least one subtask")
    xs = [_as_outcomes(p, binary) for p in parts]
    rows = {x.shape[0] for x in xs}
    if len(rows) != 1:
        raise ValueError(f"every subtask must have the same rows, got row counts {sorted(rows)}")
    return [x for x in xs if x.shape[1] > 0]


def _cluster_factor(clusters: np.ndarray, small_sample: bool) -> np.ndarray:
    """The small-sample factor C / (C - 1) (or 1): statsmodels' cluster correction
    C/(C-1) * (n-1)/(n-k) with k = 1 parameter (a mean), whose second term is 1."""
    if not small_sample:
        return np.ones_like(clusters, dtype=np.float64)
    return clusters / (clusters - 1.0)


def clustered_mean(
    outcomes_by_subtask: Sequence[np.ndarray], small_sample: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """A grouped task (MMLU's subjects) as one mean per row, with subtasks as clusters.

    The mean is size-weighted: all the group's documents pooled, mean = sum x / n.
    Documents of a subject share its difficulty, so they are not independent; the
    cluster-robust standard error (Miller 2024, eq. 4) sums residuals within clusters:

        se^2 = F / n^2 * sum_c ( sum_{d in c} (x_d - mean) )^2,  F = C / (C - 1)

    with C the number of clusters the row scored and F the small-sample factor
    (``small_sample=False``: F = 1, Miller's formula as printed). F = C/(C-1) is exactly
    statsmodels' ``OLS(x, 1).fit(cov_type="cluster")`` (its (n-1)/(n-k) is 1 for k = 1).
    NaN documents are left out per row. Returns ``(mean [rows], se [rows])``.
    """
    xs = _stack_clusters(outcomes_by_subtask)
    x = np.concatenate(xs, axis=1)
    mask = ~np.isnan(x)
    n = mask.sum(axis=1)
    if (n == 0).any():
        raise ValueError(f"row {int(np.argmin(n))} scored no document of the group")
    mean = np.where(mask, x, 0.0).sum(axis=1) / n
    resid = np.where(mask, x - mean[:, None], 0.0)
    starts = np.cumsum([0] + [a.shape[1] for a in xs[:-1]])
    sums = np.add.reduceat(resid, starts, axis=1)  # [rows, clusters]
    clusters = np.add.reduceat(mask, starts, axis=1).astype(bool).sum(axis=1)
    if (clusters < 2).any():
        r = int(np.argmin(clusters))
        raise ValueError(f"row {r} scored documents in fewer than 2 subtasks: no clustered se")
    se2 = _cluster_factor(clusters, small_sample) * (sums**2).sum(axis=1) / n.astype(float) ** 2
    return mean, np.sqrt(se2)


def clustered_paired(
    outcomes_by_subtask: Sequence[np.ndarray],
    small_sample: bool = True,
    level: float = 0.95,
) -> PairStats:
    """:func:`clustered_mean` of the per-document differences ``x_j - x_i``, every pair.

    For each pair on its shared documents: ``diff`` = pooled mean of differences,
    ``se^2 = F / n^2 * sum_c (T_c - n_c * diff)^2`` with T_c, n_c the sum of differences
    and the shared count in subtask c (both matrix products per subtask),
    F = C/(C-1) over the C subtasks the pair shares. ``p`` is the two-sided normal
    test of diff / se, the CI normal. Returns ``[rows, rows]`` arrays like
    :func:`paired_differences` (``diff``, ``se``, ``n``, ``p``, ``ci_low``, ``ci_high``).
    0/1 data are summed exactly; other data are centred first (:func:`_centred`).
    """
    xs = _stack_clusters(outcomes_by_subtask)
    normal_quantile(level)
    whole = np.concatenate(xs, axis=1)
    mask = ~np.isnan(whole)
    if np.isin(whole[mask], (0.0, 1.0)).all():  # 0/1: exact integer sums, no centring
        x0, shift = np.where(mask, whole, 0.0), np.zeros(len(whole))
    else:
        x0, shift = _centred(whole, mask)
    bounds = np.cumsum([0] + [x.shape[1] for x in xs])
    per = []
    for a, b in zip(bounds[:-1], bounds[1:]):  # loop over subtasks, all pairs vectorised
        per.append(_pair_count_sum(x0[:, a:b], mask[:, a:b]))
    n = sum(n_c for n_c, _ in per)
    s = sum(s_c for _, s_c in per)
    _check_shared(n)
    diff = s / n
    acc = np.zeros_like(diff)
    clusters = np.zeros_like(diff)
    for n_c, s_c in per:
        acc += (s_c - n_c * diff) ** 2
        clusters += n_c > 0
    off = ~np.eye(len(diff), dtype=bool)
    if (clusters[off] < 2).any():
        i, j = np.argwhere((clusters < 2) & off)[0]
        raise ValueError(f"rows {i} and {j} share documents in fewer than 2 subtasks")
    with np.errstate(divide="ignore", invalid="ignore"):  # the diagonal: 0 whatever C
        se2 = np.where(off, _cluster_factor(clusters, small_sample) * acc, 0.0)
    se = np.sqrt(se2) / n
    diff = diff + (shift[None, :] - shift[:, None])
    np.fill_diagonal(diff, 0.0)
    out = {"diff": diff, "se": se, "n": n.astype(np.int64), "p": _normal_p(diff, se)}
    return _with_ci(out, level)


def compare_task(
    task: np.ndarray | Sequence[np.ndarray], binary: bool, level: float = 0.95
) -> PairStats:
    """All pairs of one board task: :func:`paired_differences` for a plain task (an
    array), :func:`clustered_paired` for a group (a list of its subtasks' arrays; its p
    is the clustered normal test whatever ``binary``: McNemar assumes independent
    documents)."""
    if isinstance(task, np.ndarray):
        return paired_differences(task, binary, level)
    return clustered_paired(task, level=level)


# ------------------------------------------------------------------- 4. the average
def average_difference(
    task_stats: Sequence[Mapping[str, np.ndarray]], level: float = 0.95
) -> PairStats:
    """Difference of the board's ``average`` (unweighted mean over T tasks of the
    primary metric) between every pair of rows, from each task's pair statistics
    (:func:`paired_differences` or :func:`clustered_paired` results).

    diff = (1/T) sum_t diff_t. Tasks are independent samples of documents, so their
    differences are independent and Var(diff) = (1/T^2) sum_t se_t^2 (the paired se of
    plain tasks, the clustered se of groups). ``p`` is the two-sided normal test,
    the CI normal; ``n`` the total shared documents. (The board's average uses each
    row's own documents, the pairs their shared ones: the same when no row skips any.)
    """
    if len(task_stats) == 0:
        raise ValueError("the average needs at least one task")
    t = float(len(task_stats))
    diff = sum(np.asarray(s["diff"], dtype=np.float64) for s in task_stats) / t
    var = sum(np.asarray(s["se"], dtype=np.float64) ** 2 for s in task_stats) / t**2
    n = sum(np.asarray(s["n"], dtype=np.int64) for s in task_stats)
    se = np.sqrt(var)
    out = {"diff": diff, "se": se, "n": n, "p": _normal_p(diff, se)}
    return _with_ci(out, level)


# --------------------------------------------------------------- 5. rank intervals
def _min_rank(scores: np.ndarray) -> np.ndarray:
    """Rank along the last axis, 1 = highest score, ties take the best (min) rank:
    rank = 1 + number of strictly higher scores."""
    return stats.rankdata(-scores, method="min", axis=-1).astype(np.int64)


def _unique_rows(tasks: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """The distinct rows over all tasks and, per row, the index of its distinct row.
    Identical rows are bootstrapped once, so they get bit-identical averages in every
    draw (and so the same ranks) whatever order BLAS sums in."""
    widths = np.cumsum([0] + [x.shape[1] for x in tasks])
    whole = np.concatenate(tasks, axis=1)
    _, first, inverse = np.unique(whole, axis=0, return_index=True, return_inverse=True)
    uniq = whole[first]
    parts = [uniq[:, widths[k] : widths[k + 1]] for k in range(len(tasks))]
    return parts, inverse.ravel()


def _bootstrap_averages(
    tasks: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """``[n_boot, rows]`` board averages, documents resampled within each task.

    Per task t (in order): indices ``idx = rng.integers(0, D_t, (n_boot, D_t))``, the
    same for every row (paired). The resampled mean ``X[:, idx].mean(-1)`` is computed
    as ``W @ X.T / D_t`` with W[b, d] = how often draw b picked document d (bincount):
    the same number without a ``[rows, n_boot, D_t]`` gather (mathematically equal;
    floating-point sums in another order)."""
    total = np.zeros((n_boot, tasks[0].shape[0]))
    for x in tasks:
        d = x.shape[1]
        idx = rng.integers(0, d, size=(n_boot, d))
        offsets = (np.arange(n_boot, dtype=np.int64) * d)[:, None]
        w = np.bincount((idx + offsets).ravel(), minlength=n_boot * d).reshape(n_boot, d)
        total += (w.astype(np.float64) @ x.T) / d
    return total / len(tasks)


def rank_intervals(
    outcomes_by_task: Sequence[np.ndarray],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's rank on the board's average and its bootstrap interval.

    ``rank``: rank of the observed average (1 = best, higher score is better, ties take
    the min rank). Bootstrap: ``n_boot`` draws, each resampling the documents of every
    task with replacement (stratified by task, the same indices for every row: paired),
    averaging the task means (unweighted) per row and ranking the rows. ``low``/``high``
    are the (1-level)/2 and 1-(1-level)/2 quantiles of each row's bootstrap ranks
    (``numpy.quantile`` methods "lower" and "higher": integers, never narrower), widened
    to contain ``rank`` when the percentiles miss it. Deterministic: the draws come from
    ``Generator(PCG64(seed))``, one ``integers`` call per task in order.

    Each task is a complete ``[rows, docs_t]`` array (a group: its subtasks
    concatenated, resampled as one stratum); rows are ranked jointly so every row must
    score every document (NaN raises ``ValueError``).
    """
    if len(outcomes_by_task) == 0:
        raise ValueError("rank intervals need at least one task")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot!r}")
    _check_level(level)
    tasks = [np.asarray(x, dtype=np.float64) for x in outcomes_by_task]
    rows = {x.shape[0] for x in tasks}
    if len(rows) != 1 or any(x.ndim != 2 for x in tasks):
        raise ValueError("every task must be a [rows, docs] array with the same rows")
    for k, x in enumerate(tasks):
        if x.shape[1] == 0:
            raise ValueError(f"task {k} has no document")
        if np.isnan(x).any():
            r = int(np.argwhere(np.isnan(x))[0, 0])
            raise ValueError(f"task {k}: row {r} did not score every document (NaN)")
    rank = _min_rank(np.mean([x.mean(axis=1) for x in tasks], axis=0))
    uniq, back = _unique_rows(tasks)
    rng = np.random.Generator(np.random.PCG64(seed))
    boot = _bootstrap_averages(uniq, int(n_boot), rng)[:, back]
    ranks = _min_rank(boot)
    tail = (1.0 - level) / 2.0
    low = np.quantile(ranks, tail, axis=0, method="lower").astype(np.int64)
    high = np.quantile(ranks, 1.0 - tail, axis=0, method="higher").astype(np.int64)
    return rank, np.minimum(low, rank), np.maximum(high, rank)


def tie_groups(rank: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Group ids (0 = the best group) of rows that cannot be told apart.

    Rows i and j are *tied* when each one's rank lies inside the other's interval:
    low_j <= rank_i <= high_j and low_i <= rank_j <= high_i. Being tied is not
    transitive, so groups are formed greedily from the top: in order of (rank, row
    index), each row not yet grouped opens a new group and takes every ungrouped row
    tied with it. So every row is tied with its group's leader (the group's best
    row), identical rows always share a group, and groups are numbered by their
    leaders' ranks.
    """
    rank = np.asarray(rank)
    low = np.asarray(low)
    high = np.asarray(high)
    if not (rank.shape == low.shape == high.shape) or rank.ndim != 1:
        raise ValueError("rank, low and high must be 1-d arrays of the same length")
    inside = (low[None, :] <= rank[:, None]) & (rank[:, None] <= high[None, :])  # i in j's
    tied = inside & inside.T
    group = np.full(rank.shape, -1, dtype=np.int64)
    next_id = 0
    for leader in np.lexsort((np.arange(len(rank)), rank)):
        if group[leader] >= 0:
            continue
        group[(group < 0) & tied[leader]] = next_id
        group[leader] = next_id
        next_id += 1
    return group


# ------------------------------------------------------------------- 6. equivalence
def tost(
    outcomes_ref: np.ndarray,
    outcomes_other: np.ndarray,
    margin: float,
    alpha: float = 0.05,
    binary: bool = False,
) -> dict[str, np.ndarray]:
    """Two one-sided tests (TOST): is ``other`` within +-``margin`` of ``ref``?

    On the paired differences d = other - ref (documents both scored; the last axis is
    documents, leading axes are batched): diff = mean d, se = sd(d, ddof=1) / sqrt(n),

        p_lower = P(T >= (diff + margin) / se)   H0: diff <= -margin
        p_upper = P(T <= (diff - margin) / se)   H0: diff >= +margin
        p = max(p_lower, p_upper)

    T is Student's t with n - 1 df for continuous outcomes (statsmodels'
    ``ttost_paired``) and the standard normal for binary ones (the large-sample paired
    difference of proportions, statsmodels' ``ztost`` on d). ``margin`` is in the
    metric's units (0.01 = 1 point of accuracy). Verdict:

    - "equivalent": TOST rejects (p < alpha);
    - "different": the two-sided test of diff = 0 rejects at alpha (the 1-alpha CI
      excludes 0) and TOST does not;
    - "not shown equivalent": neither.

    Also returns ``n``, ``p_diff`` (two-sided p of diff = 0), ``ci_low``/``ci_high``
    (1 - alpha, same distribution).
    """
    if not np.isfinite(margin) or margin <= 0:
        raise ValueError(f"margin must be > 0 (in the metric's units), got {margin!r}")
    _check_level(alpha, "alpha")
    ref = np.asarray(outcomes_ref, dtype=np.float64)
    other = np.asarray(outcomes_other, dtype=np.float64)
    if ref.shape != other.shape or ref.ndim < 1:
        raise ValueError(f"ref and other must have the same shape, got {ref.shape}, {other.shape}")
    if binary:
        for name, a in (("ref", ref), ("other", other)):
            if not (np.isnan(a) | (a == 0) | (a == 1)).all():
                raise ValueError(f"binary outcomes must be 0, 1 or NaN ({name})")
    d = other - ref
    mask = ~np.isnan(d)
    n = mask.sum(axis=-1)
    if (n < 2).any():
        raise ValueError(f"ref and other share only {int(n.min())} documents; TOST needs 2")
    d0 = np.where(mask, d, 0.0)
    diff = d0.sum(axis=-1) / n
    resid = np.where(mask, d - diff[..., None], 0.0)
    se = np.sqrt((resid**2).sum(axis=-1) / (n - 1.0) / n)
    dist = stats.norm() if binary else stats.t(n - 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_low = np.nan_to_num((diff + margin) / se, nan=0.0)
        t_upp = np.nan_to_num((diff - margin) / se, nan=0.0)
        t_zero = np.nan_to_num(np.abs(diff) / se, nan=0.0)
    p_lower = dist.sf(t_low)
    p_upper = dist.cdf(t_upp)
    p = np.maximum(p_lower, p_upper)
    p_diff = 2.0 * dist.sf(t_zero)
    q = dist.isf(alpha / 2.0)
    verdict = np.where(
        p < alpha, "equivalent", np.where(p_diff < alpha, "different", "not shown equivalent")
    )
    return {
        "diff": diff,
        "se": se,
        "n": n,
        "p_lower": p_lower,
        "p_upper": p_upper,
        "p": p,
        "p_diff": p_diff,
        "ci_low": diff - q * se,
        "ci_high": diff + q * se,
        "verdict": verdict,
    }


# ----------------------------------------------------------------------- 7. power
def minimum_detectable_effect(
    n: np.ndarray | int,
    p0: np.ndarray | float | None = None,
    sd: np.ndarray | float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    paired_discordance: np.ndarray | float | None = None,
) -> np.ndarray:
    """Smallest true difference a two-sided test at ``alpha`` detects with ``power``
    on ``n`` documents (normal approximation), broadcast over the arrays given.

    With z = z_{1-alpha/2} + z_{power} (2.80 for 5 % / 80 %) and exactly one of:

    - ``p0`` (accuracy base rate, unpaired-style): MDE = z * sqrt(2 p0 (1 - p0) / n);
    - ``sd`` (sd of a continuous per-document metric, unpaired-style):
      MDE = z * sd * sqrt(2 / n);
    - ``paired_discordance`` psi (share of documents on which two rows disagree, the
      paired design): Var(d) = psi - delta^2 ~ psi, MDE = z * sqrt(psi / n).

    The unpaired forms are upper bounds for paired rows (which agree on most
    documents); the discordance form is what a paired comparison actually detects.
    Equivalently: statsmodels' ``NormalIndPower().power(MDE / sigma, n, alpha / 2,
    alternative="larger")`` = ``power`` (ignoring the far tail).
    """
    _check_level(alpha, "alpha")
    _check_level(power, "power")
    given = {"p0": p0, "sd": sd, "paired_discordance": paired_discordance}
    chosen = [k for k, v in given.items() if v is not None]
    if len(chosen) != 1:
        raise ValueError(f"give exactly one of p0, sd, paired_discordance (got {chosen or 'none'})")
    nn = np.asarray(n, dtype=np.float64)
    if (nn < 1).any():
        raise ValueError(f"n must be >= 1, got {n!r}")
    name = chosen[0]
    v = np.asarray(given[name], dtype=np.float64)
    valid = {"p0": (v > 0) & (v < 1), "sd": v > 0, "paired_discordance": (v > 0) & (v <= 1)}
    if not valid[name].all():
        allowed = {"p0": "in (0, 1)", "sd": "> 0", "paired_discordance": "in (0, 1]"}
        raise ValueError(f"{name} must be {allowed[name]}, got {given[name]!r}")
    # variance of one document's contribution to the difference of two means
    var = {"p0": 2.0 * v * (1.0 - v), "sd": 2.0 * v**2, "paired_discordance": v}[name]
    z = stats.norm.isf(alpha / 2.0) + stats.norm.ppf(power)
    return z * np.sqrt(var / nn)


# --------------------------------------------------------------- 8. normalisation
def chance_of(n_choices_per_doc: np.ndarray | Sequence[int]) -> float:
    """Chance level of a multiple-choice task: mean over its documents of 1/n_choices
    (a random guess is right with probability 1/n_choices on each)."""
    k = np.asarray(n_choices_per_doc, dtype=np.float64)
    if k.size == 0:
        raise ValueError("chance_of needs the number of choices of at least one document")
    if (k < 1).any() or not np.all(k == np.floor(k)):
        raise ValueError("n_choices must be whole numbers >= 1")
    return float(np.mean(1.0 / k))


def normalised_score(
    value: np.ndarray | float, chance: np.ndarray | float, lower_bound: float = 0.0
) -> np.ndarray:
    """Open LLM Leaderboard v2 normalisation, in points: chance -> 0, perfect -> 100,

        score = (value - chance) / (1 - chance) * 100, clipped below at ``lower_bound``

    (0 by default: a score below chance counts as 0, as the v2 leaderboard does;
    ``-inf`` keeps it negative, as the report's unclipped heatmaps). ``value`` and
    ``chance`` are fractions; generation tasks have chance 0 (the score is value * 100).
    """
    c = np.asarray(chance, dtype=np.float64)
    if ((c < 0) | (c >= 1)).any():
        raise ValueError(f"chance must be in [0, 1), got {chance!r}")
    score = (np.asarray(value, dtype=np.float64) - c) / (1.0 - c) * 100.0
    return np.maximum(score, lower_bound)
