"""llmboard.results.statistics against independent references (scipy, statsmodels).

The outcome matrices are synthetic but shaped like a board's: a latent difficulty per
document, a skill per row (an item-response model), so rows agree on easy and hard
documents and disagree on the rest; precision variants are a row with a few answers
flipped; continuous outcomes look like log-likelihoods (a large per-document level,
small differences between rows). Every statistic is checked against scipy or
statsmodels to 1e-10 relative (or exactly).
"""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower, normal_power
from statsmodels.stats.proportion import proportions_ztest
from statsmodels.stats.weightstats import ttost_paired, ztost

from llmboard.results import statistics as S
from llmboard.results.report.stats import mcnemar_exact, paired_difference

RTOL = 1e-10


def close(actual, expected, rtol=RTOL, atol=0.0):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


# ------------------------------------------------------------------ synthetic boards
def binary_board(rows=6, docs=300, seed=7, flips=(0, 3, 12)):
    """0/1 outcomes from an item-response model; rows after the first ``rows`` are the
    first row with ``flips[k]`` answers flipped (its precision variants)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 1.5, docs)
    skill = np.linspace(-0.4, 0.6, rows)
    prob = 1.0 / (1.0 + np.exp(-(skill[:, None] - difficulty[None, :])))
    x = (rng.random((rows, docs)) < prob).astype(np.float64)
    variants = []
    for k in flips:
        v = x[0].copy()
        idx = rng.choice(docs, size=k, replace=False)
        v[idx] = 1.0 - v[idx]
        variants.append(v)
    return np.vstack([x, *variants]) if variants else x


def loglik_board(rows=6, docs=300, seed=11):
    """Log-likelihood-like outcomes: a per-document level of -300..-5, row offsets,
    and a near copy of row 0 (a bf16 run: differences of 1e-3)."""
    rng = np.random.default_rng(seed)
    level = -rng.gamma(2.0, 30.0, docs) - 5.0
    x = level[None, :] + rng.normal(0.0, 0.8, (rows, docs)) + np.linspace(0, 0.3, rows)[:, None]
    bf16 = x[0] + rng.normal(0.0, 1e-3, docs) + 2e-4
    return np.vstack([x, bf16])


def pairs(rows):
    return [(i, j) for i in range(rows) for j in range(rows) if i != j]


# -------------------------------------------------------------- 1. paired differences
def test_binary_pairs_match_mcnemar_and_paired_se():
    x = binary_board()
    r = S.paired_differences(x, binary=True)
    for i, j in pairs(len(x)):
        b = int(((x[i] == 1) & (x[j] == 0)).sum())
        c = int(((x[i] == 0) & (x[j] == 1)).sum())
        ref = mcnemar([[0, b], [c, 0]], exact=True).pvalue
        close(r["p"][i, j], ref)
        close(r["p"][i, j], mcnemar_exact(b, c))  # the report's scalar version
        d, se = paired_difference(list(x[i]), list(x[j]))
        close(r["diff"][i, j], d, atol=1e-15)
        close(r["se"][i, j], se)
        assert r["n"][i, j] == x.shape[1]
    z = stats.norm.ppf(0.975)
    close(r["ci_low"], r["diff"] - z * r["se"], atol=1e-15)
    close(r["ci_high"], r["diff"] + z * r["se"], atol=1e-15)
    # antisymmetric diff, symmetric se and p, a zero diagonal
    close(r["diff"], -r["diff"].T, atol=0)
    close(r["p"], r["p"].T, atol=0)
    assert (np.diag(r["p"]) == 1).all() and (np.diag(r["se"]) == 0).all()
    # the variant with no flip is the same row: p = 1, se = 0
    assert r["p"][0, 6] == 1.0 and r["se"][0, 6] == 0.0


def test_level_sets_the_interval():
    x = binary_board()
    r = S.paired_differences(x, binary=True, level=0.9)
    close(r["ci_high"] - r["diff"], stats.norm.ppf(0.95) * r["se"], atol=1e-15)
    with pytest.raises(ValueError, match="level"):
        S.paired_differences(x, binary=True, level=1.0)


def test_continuous_pairs_match_ttest_rel():
    x = loglik_board()
    r = S.paired_differences(x, binary=False)
    for i, j in pairs(len(x)):
        t = stats.ttest_rel(x[j], x[i])
        d = x[j] - x[i]
        close(r["diff"][i, j], d.mean())
        close(r["se"][i, j], d.std(ddof=1) / np.sqrt(len(d)))
        close(r["p"][i, j], t.pvalue)
    # the bf16 copy of row 0: 5 orders of magnitude below the per-document spread
    assert r["se"][0, 6] < 1e-4


def test_missing_documents_are_left_out_pairwise():
    rng = np.random.default_rng(3)
    x = binary_board()
    xc = loglik_board()
    for data, binary in ((x, True), (xc, False)):
        data = data.copy()
        data[rng.random(data.shape) < 0.1] = np.nan
        r = S.paired_differences(data, binary=binary)
        for i, j in [(0, 1), (2, 5), (6, 0), (4, 3)]:
            both = ~np.isnan(data[i]) & ~np.isnan(data[j])
            a, b = data[i, both], data[j, both]
            assert r["n"][i, j] == both.sum()
            close(r["diff"][i, j], (b - a).mean(), atol=1e-15)
            if binary:
                bb, cc = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
                close(r["p"][i, j], mcnemar([[0, bb], [cc, 0]], exact=True).pvalue)
            else:
                close(r["p"][i, j], stats.ttest_rel(b, a).pvalue)


def test_paired_beats_unpaired_on_a_2x2_table():
    """The point of pairing (lm-eval PR #3868 shows it on real runs, p 0.080 unpaired vs
    0.008 McNemar): 500 documents, 300 right in both, 6 only in A, 20 only in B, 174 in
    neither. A 61.2 %, B 64.0 %: an unpaired two-proportion test sees nothing (p 0.36),
    the paired exact McNemar test does (p 0.0094)."""
    both, a_only, b_only, neither = 300, 6, 20, 174
    a = np.array([1] * both + [1] * a_only + [0] * b_only + [0] * neither, dtype=float)
    b = np.array([1] * both + [0] * a_only + [1] * b_only + [0] * neither, dtype=float)
    r = S.paired_differences(np.vstack([a, b]), binary=True)
    table = [[both, a_only], [b_only, neither]]
    expected = mcnemar(table, exact=True).pvalue
    close(r["p"][0, 1], expected)
    assert r["p"][0, 1] == pytest.approx(0.009355306625366211, rel=1e-12)
    unpaired = proportions_ztest([b.sum(), a.sum()], [500, 500])[1]
    assert unpaired > 0.3 > 0.01 > r["p"][0, 1]
    close(r["diff"][0, 1], 14 / 500)


def test_rows_sharing_no_document_are_named():
    x = np.array([[1, 0, np.nan, np.nan], [np.nan, np.nan, 1, 1], [1, 1, 0, 1.0]])
    with pytest.raises(ValueError, match="rows 0 and 1 share no scored documents"):
        S.paired_differences(x, binary=True)
    y = np.array([[1, 0, 1, np.nan], [np.nan, np.nan, 1, 1.0]])
    with pytest.raises(ValueError, match="rows 0 and 1 share only 1"):
        S.paired_differences(y, binary=False)
    with pytest.raises(ValueError, match="row 1, document 2"):
        S.paired_differences(np.array([[1, 0, 1], [0, 1, 0.5]]), binary=True)


# ------------------------------------------------------------------ 2. multiplicity
def test_adjust_pvalues_match_statsmodels():
    x = binary_board(rows=12, flips=(2, 5))
    p = S.upper_triangle(S.paired_differences(x, binary=True)["p"])
    rng = np.random.default_rng(0)
    family = np.concatenate([p, rng.random(200) ** 3, [0.0, 1.0, 0.02, 0.02, 0.02]])
    for ours, theirs in (("holm", "holm"), ("bh", "fdr_bh")):
        expected = multipletests(family, method=theirs)[1]
        np.testing.assert_array_equal(S.adjust_pvalues(family, ours), expected)
    assert S.adjust_pvalues(np.array([]), "holm").size == 0


def test_adjust_pvalues_round_trip_to_a_matrix():
    p = np.array([[1, 0.01, 0.04], [0.01, 1, 0.03], [0.04, 0.03, 1]])
    flat = S.upper_triangle(p)
    np.testing.assert_array_equal(flat, [0.01, 0.04, 0.03])
    adj = S.from_upper_triangle(S.adjust_pvalues(flat, "holm"), 3)
    np.testing.assert_allclose(adj, [[1, 0.03, 0.06], [0.03, 1, 0.06], [0.06, 0.06, 1]])


def test_unknown_adjust_method_is_named():
    with pytest.raises(ValueError, match=r"'bonferroni'.*holm, bh"):
        S.adjust_pvalues(np.array([0.1, 0.2]), "bonferroni")


# ------------------------------------------------------------ 3. clustered (grouped)
def grouped_board(seed=5, sizes=(40, 12, 75, 23, 60, 31, 8), binary=True):
    """A grouped task: subjects of different sizes and difficulty (a shared offset per
    subject: documents within a subject are correlated)."""
    rng = np.random.default_rng(seed)
    skill = np.array([-0.3, 0.0, 0.2, 0.5, 0.55])
    parts = []
    for k in sizes:
        subject = rng.normal(0, 1.0)
        difficulty = subject + rng.normal(0, 1.2, k)
        logit = skill[:, None] - difficulty[None, :] + rng.normal(0, 0.4, (len(skill), 1))
        if binary:
            parts.append((rng.random((len(skill), k)) < 1 / (1 + np.exp(-logit))).astype(float))
        else:
            parts.append(-30 + logit + rng.normal(0, 0.3, (len(skill), k)))
    return parts


def statsmodels_cluster(values, groups):
    fit = sm.OLS(values, np.ones((len(values), 1))).fit(
        cov_type="cluster", cov_kwds={"groups": groups}
    )
    return fit.params[0], fit.bse[0]


def test_clustered_mean_matches_statsmodels_ols_cluster():
    for binary in (True, False):
        parts = grouped_board(binary=binary)
        mean, se = S.clustered_mean(parts)
        groups = np.concatenate([np.full(p.shape[1], k) for k, p in enumerate(parts)])
        whole = np.concatenate(parts, axis=1)
        for r in range(len(whole)):
            m, s = statsmodels_cluster(whole[r], groups)
            close(mean[r], m)
            close(se[r], s)
        # without the small-sample factor C/(C-1): Miller's formula as printed
        _, se_raw = S.clustered_mean(parts, small_sample=False)
        c = len(parts)
        close(se_raw, se * np.sqrt((c - 1) / c))


def test_clustered_mean_leaves_out_missing_documents():
    parts = [p.copy() for p in grouped_board()]
    parts[2][1, :] = np.nan  # row 1 skipped a whole subject
    parts[0][3, :5] = np.nan
    mean, se = S.clustered_mean(parts)
    groups = np.concatenate([np.full(p.shape[1], k) for k, p in enumerate(parts)])
    whole = np.concatenate(parts, axis=1)
    for r in (1, 3):
        ok = ~np.isnan(whole[r])
        m, s = statsmodels_cluster(whole[r, ok], groups[ok])
        close(mean[r], m)
        close(se[r], s)


def test_clustered_paired_matches_statsmodels_on_differences():
    for binary in (True, False):
        parts = grouped_board(seed=9, binary=binary)
        r = S.clustered_paired(parts)
        groups = np.concatenate([np.full(p.shape[1], k) for k, p in enumerate(parts)])
        whole = np.concatenate(parts, axis=1)
        for i, j in pairs(len(whole)):
            m, s = statsmodels_cluster(whole[j] - whole[i], groups)
            close(r["diff"][i, j], m, atol=1e-15)
            close(r["se"][i, j], s)
            close(r["p"][i, j], 2 * stats.norm.sf(abs(m / s)))
        assert (np.diag(r["se"]) == 0).all() and (np.diag(r["p"]) == 1).all()
    with pytest.raises(ValueError, match="fewer than 2 subtasks"):
        S.clustered_paired([grouped_board()[0]])


def test_compare_task_dispatches_on_groups():
    parts = grouped_board()
    whole = np.concatenate(parts, axis=1)
    grouped = S.compare_task(parts, binary=True)
    plain = S.compare_task(whole, binary=True)
    close(grouped["diff"], plain["diff"], atol=1e-15)
    assert not np.allclose(grouped["se"], plain["se"])  # the clustering matters


# ---------------------------------------------------------------- 4. the average
def test_average_difference_adds_task_variances():
    tasks = [binary_board(seed=s, docs=d, flips=()) for s, d in ((1, 120), (2, 300), (3, 80))]
    group = grouped_board()
    stats_per_task = [S.paired_differences(x, binary=True) for x in tasks]
    # the group has 5 rows: use the first 5 rows of every task
    stats_per_task = [{k: v[:5, :5] for k, v in s.items()} for s in stats_per_task]
    stats_per_task.append(S.clustered_paired(group))
    avg = S.average_difference(stats_per_task)
    means = [x[:5].mean(axis=1) for x in tasks] + [np.concatenate(group, axis=1).mean(axis=1)]
    board_avg = np.mean(means, axis=0)
    close(avg["diff"], board_avg[None, :] - board_avg[:, None], atol=1e-15)
    expected_se = np.sqrt(sum(s["se"] ** 2 for s in stats_per_task)) / len(stats_per_task)
    close(avg["se"], expected_se)
    i, j = 0, 4
    close(avg["p"][i, j], 2 * stats.norm.sf(abs(avg["diff"][i, j] / avg["se"][i, j])))
    assert avg["n"][i, j] == 120 + 300 + 80 + sum(p.shape[1] for p in group)


# --------------------------------------------------------------- 5. rank intervals
def rank_tasks(seed=21):
    rng = np.random.default_rng(seed)
    tasks = []
    for docs in (150, 90, 220, 60):
        difficulty = rng.normal(0, 1.3, docs)
        skill = np.array([3.5, 0.2, 0.25, 0.0, -0.2, 0.2])  # row 0 clearly best
        prob = 1 / (1 + np.exp(-(skill[:, None] - difficulty[None, :])))
        x = (rng.random((6, docs)) < prob).astype(float)
        x[5] = x[2]  # row 5 identical to row 2 (a precision that changed nothing)
        tasks.append(x)
    return tasks


def test_rank_intervals_are_deterministic():
    tasks = rank_tasks()
    a = S.rank_intervals(tasks, n_boot=300, seed=42)
    b = S.rank_intervals(tasks, n_boot=300, seed=42)
    for u, v in zip(a, b):
        assert u.dtype == np.int64 and u.tobytes() == v.tobytes()
    c = S.rank_intervals(tasks, n_boot=300, seed=43)
    assert any(u.tobytes() != v.tobytes() for u, v in zip(a[1:], c[1:]))


def test_rank_intervals_match_a_plain_gather_bootstrap():
    """The same draws (one rng.integers per task), resampled the slow, obvious way."""
    tasks = rank_tasks(seed=4)
    n_boot, seed, level = 200, 3, 0.9
    rank, low, high = S.rank_intervals(tasks, n_boot=n_boot, seed=seed, level=level)
    rng = np.random.Generator(np.random.PCG64(seed))
    avg = np.zeros((n_boot, 6))
    for x in tasks:
        idx = rng.integers(0, x.shape[1], size=(n_boot, x.shape[1]))
        avg += x[:, idx].mean(axis=-1).T / len(tasks)
    ranks = stats.rankdata(-avg, method="min", axis=1)
    lo = np.quantile(ranks, 0.05, axis=0, method="lower")
    hi = np.quantile(ranks, 0.95, axis=0, method="higher")
    observed = stats.rankdata(-np.mean([x.mean(axis=1) for x in tasks], axis=0), method="min")
    np.testing.assert_array_equal(rank, observed)
    np.testing.assert_array_equal(low, np.minimum(lo, observed))
    np.testing.assert_array_equal(high, np.maximum(hi, observed))


def test_rank_interval_sanity_and_ties():
    rank, low, high = S.rank_intervals(rank_tasks(), n_boot=500, seed=1)
    assert (rank[0], low[0], high[0]) == (1, 1, 1)  # best on every task
    assert (rank[2], low[2], high[2]) == (rank[5], low[5], high[5])  # identical rows
    groups = S.tie_groups(rank, low, high)
    assert groups[2] == groups[5]
    assert groups[0] == 0 and (groups[1:] != 0).all()
    assert ((low <= rank) & (rank <= high)).all()


def test_tie_groups_rule():
    # rows: 0 alone at the top; 1 and 2 overlap mutually; 3 contains 2's rank but 2's
    # interval does not contain 3's rank -> not tied to the leader 1 -> its own group
    rank = np.array([1, 2, 3, 5])
    low = np.array([1, 2, 2, 3])
    high = np.array([1, 3, 4, 6])
    np.testing.assert_array_equal(S.tie_groups(rank, low, high), [0, 1, 1, 2])


def test_rank_intervals_reject_missing_documents():
    tasks = rank_tasks()
    tasks[1] = tasks[1].copy()
    tasks[1][3, 7] = np.nan
    with pytest.raises(ValueError, match="task 1: row 3"):
        S.rank_intervals(tasks, n_boot=10)


# ------------------------------------------------------------------ 6. equivalence
def test_tost_matches_statsmodels_ttost_paired():
    x = loglik_board()
    ref, other = x[0], x[6]  # bf16 copy: equivalent within 0.01 nats
    for a, b, margin in ((ref, other, 0.01), (x[0], x[1], 0.05), (x[0], x[5], 0.5)):
        r = S.tost(a, b, margin=margin)
        p, (_, p1, _), (_, p2, _) = ttost_paired(b, a, -margin, margin)
        close(r["p_lower"], p1)
        close(r["p_upper"], p2)
        close(r["p"], p)
        close(r["p_diff"], stats.ttest_rel(b, a).pvalue)
    assert S.tost(ref, other, margin=0.01)["verdict"] == "equivalent"


def test_tost_binary_matches_statsmodels_ztost_and_verdicts():
    x = binary_board(rows=3, docs=2000, flips=(4, 400))
    d = x[3] - x[0]
    r = S.tost(x[0], x[3], margin=0.01, binary=True)  # 4 flips in 2000: equivalent
    p, (_, p1), (_, p2) = ztost(d, -0.01, 0.01)
    close([r["p_lower"], r["p_upper"], r["p"]], [p1, p2, p])
    assert r["verdict"] == "equivalent"
    far = S.tost(x[0], x[1], margin=0.01, binary=True)  # a different model
    assert far["verdict"] in ("different", "not shown equivalent")
    noisy = S.tost(x[0], x[4], margin=0.01, binary=True)  # 400 random flips
    p, (_, p1), (_, p2) = ztost(x[4] - x[0], -0.01, 0.01)
    close([noisy["p_lower"], noisy["p_upper"]], [p1, p2])
    assert noisy["verdict"] == ("different" if noisy["p_diff"] < 0.05 else "not shown equivalent")


def test_tost_verdicts_and_batches():
    rng = np.random.default_rng(2)
    ref = rng.normal(0, 1, (3, 400))
    shift = np.array([[0.0], [0.3], [0.0]])
    noise = np.array([[0.05], [0.05], [2.0]])  # the third: too noisy to show anything
    other = ref + shift + noise * rng.normal(0, 1, (3, 400))
    r = S.tost(ref, other, margin=0.05)
    assert list(r["verdict"]) == ["equivalent", "different", "not shown equivalent"]
    for k in range(3):
        one = S.tost(ref[k], other[k], margin=0.05)
        close(r["p"][k], one["p"])
        p, _, _ = ttost_paired(other[k], ref[k], -0.05, 0.05)
        close(r["p"][k], p)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"margin": 0.0}, "margin must be > 0"),
        ({"margin": -0.01}, "margin must be > 0"),
        ({"margin": 0.01, "alpha": 1.5}, r"alpha must be in \(0, 1\), got 1.5"),
        ({"margin": 0.01, "alpha": 0.0}, "alpha must be in"),
    ],
)
def test_tost_rejects_bad_settings(kwargs, message):
    x = binary_board(rows=2, flips=())
    with pytest.raises(ValueError, match=message):
        S.tost(x[0], x[1], **kwargs)


# ----------------------------------------------------------------------- 7. power
def test_mde_inverts_statsmodels_power():
    n = np.array([50, 100, 500, 1000, 14042])
    p0 = np.array([[0.25], [0.5], [0.8]])
    mde = S.minimum_detectable_effect(n, p0=p0)
    assert mde.shape == (3, 5)
    power = NormalIndPower()
    for a, b in np.ndindex(mde.shape):
        sigma = np.sqrt(p0[a, 0] * (1 - p0[a, 0]))
        # one tail at alpha/2 has exactly the requested power at the MDE ...
        got = power.power(mde[a, b] / sigma, nobs1=n[b], alpha=0.025, alternative="larger")
        close(got, 0.8)
        # ... the two-sided test slightly more (the far tail adds < 1e-5)
        two = power.power(mde[a, b] / sigma, nobs1=n[b], alpha=0.05)
        assert 0.8 <= two < 0.8 + 1e-5
    # 1000 docs at 50 %: 2.8 * sqrt(0.5 / 1000) = 6.3 points
    close(S.minimum_detectable_effect(1000, p0=0.5), 2.8016 * np.sqrt(0.5 / 1000), rtol=1e-4)
    # statsmodels' solver agrees to its own tolerance
    solved = power.solve_power(nobs1=500, alpha=0.05, power=0.8) * np.sqrt(0.25)
    close(S.minimum_detectable_effect(500, p0=0.5), solved, rtol=1e-4)


def test_mde_sd_and_paired_forms():
    n = np.array([100, 1000])
    mde = S.minimum_detectable_effect(n, sd=2.0, alpha=0.01, power=0.9)
    for k in range(2):
        got = NormalIndPower().power(mde[k] / 2.0, n[k], alpha=0.005, alternative="larger")
        close(got, 0.9)
    psi = 0.08  # 8 % of documents discordant between two precisions
    mde = S.minimum_detectable_effect(n, paired_discordance=psi)
    for k in range(2):
        got = normal_power(mde[k] / np.sqrt(psi), n[k], alpha=0.025, alternative="larger")
        close(got, 0.8)
    unpaired = S.minimum_detectable_effect(n, p0=0.6)
    assert (mde < unpaired).all()  # pairing detects smaller differences


def test_mde_rejects_bad_settings():
    with pytest.raises(ValueError, match="exactly one of"):
        S.minimum_detectable_effect(100)
    with pytest.raises(ValueError, match="exactly one of"):
        S.minimum_detectable_effect(100, p0=0.5, sd=1.0)
    with pytest.raises(ValueError, match="p0 must be in"):
        S.minimum_detectable_effect(100, p0=1.0)
    with pytest.raises(ValueError, match="power must be in"):
        S.minimum_detectable_effect(100, p0=0.5, power=1.2)


# --------------------------------------------------------------- 8. normalisation
def test_normalised_score_and_chance():
    chance = S.chance_of([4, 4, 2, 4])  # 3 docs at 1/4, 1 at 1/2
    close(chance, 0.3125)
    close(S.normalised_score(0.3125, chance), 0.0, atol=1e-12)
    close(S.normalised_score(1.0, chance), 100.0)
    close(S.normalised_score(np.array([0.65625, 0.2]), chance), [50.0, 0.0])
    close(S.normalised_score(0.2, chance, lower_bound=-np.inf), (0.2 - 0.3125) / 0.6875 * 100)
    close(S.normalised_score(0.42, 0.0), 42.0)  # generation task
    # the report's (unclipped, fraction) normalisation, in points
    from llmboard.results.report.collect import normalised

    close(S.normalised_score(0.7, 0.25), normalised(0.7, 0.25) * 100)
    with pytest.raises(ValueError, match="chance"):
        S.normalised_score(0.5, 1.0)
    with pytest.raises(ValueError, match="n_choices"):
        S.chance_of([4, 0])
