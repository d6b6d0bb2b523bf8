"""The board's statistics (comparisons.parquet/.md, rank intervals and tie groups in the
wide board, equivalence on the precision page, ``llmboard compare``) on the hand-made
board of tests/test_leaderboard_board.py: its score files are written by the real scorer
from predictions whose right documents are known by construction (the first k of n), so
the paired numbers below are arithmetic on those counts. The statistics themselves are
checked against scipy and statsmodels in tests/test_statistics.py."""

from __future__ import annotations

import math

import polars as pl
import pytest
from test_leaderboard_board import DISPLAY, GROUPS, PROMPTING, ROWS, write_score

from llmboard.cli import main as cli
from llmboard.results.agreement import _equivalence
from llmboard.results.leaderboard import build_long, write_leaderboard
from llmboard.results.verify import _Checker

STATS = {"level": 0.95, "adjust": "holm", "bootstrap": 500, "seed": 7}


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    root = tmp_path_factory.mktemp("stats")
    scores = [
        write_score(root / "scores", model, precision, task, right)
        for (model, precision), tasks in ROWS.items()
        for task, right in tasks.items()
    ]
    out = root / "out"
    _write_board(scores, out)
    return out, scores


def _write_board(scores, out) -> None:
    """The leaderboard rule's files (board, statistics, comparisons) in ``out``."""
    write_leaderboard(
        scores,
        str(out / "leaderboard"),
        DISPLAY,
        GROUPS,
        PROMPTING,
        stats=STATS,
        comparisons_prefix=str(out / "comparisons"),
    )


def pair(comp, task: str, a: tuple, b: tuple) -> dict:
    """The comparison of rows a and b on ``task``, as b - a (whichever order it is kept)."""
    for (x, y), sign in (((a, b), 1), ((b, a), -1)):
        r = comp.filter(
            (pl.col("task") == task)
            & (pl.col("model_a") == x[0])
            & (pl.col("precision_a") == x[1])
            & (pl.col("model_b") == y[0])
            & (pl.col("precision_b") == y[1])
        )
        if r.height:
            d = r.row(0, named=True)
            lo, hi = (d["ci_low"], d["ci_high"]) if sign > 0 else (-d["ci_high"], -d["ci_low"])
            return {**d, "diff": sign * d["diff"], "ci_low": lo, "ci_high": hi}
    raise AssertionError(f"no pair {a} {b} on {task}")


def test_paired_difference_and_exact_mcnemar_by_hand(board):
    """boolq, gamma (first 6 of 10 right) against alpha (first 2): 4 documents right only
    in gamma, none only in alpha. b - a = 0.4; per-document differences four 1s and six
    0s: sd = sqrt((4 * 0.6^2 + 6 * 0.4^2) / 9); exact McNemar p = 2 * 0.5^4 = 0.125."""
    out, _ = board
    comp = pl.read_parquet(out / "comparisons.parquet")
    r = pair(comp, "boolq", ("alpha", "fp32"), ("gamma", "fp32"))
    assert r["diff"] == pytest.approx(0.4)
    sd = math.sqrt((4 * 0.6**2 + 6 * 0.4**2) / 9)
    assert r["se"] == pytest.approx(sd / math.sqrt(10))
    assert r["p"] == pytest.approx(0.125)
    assert r["n"] == 10 and r["test"] == "exact McNemar"
    assert r["ci_low"] == pytest.approx(0.4 - 1.959963984540054 * sd / math.sqrt(10))
    # mmlu is a group: its subjects are clusters
    assert pair(comp, "mmlu", ("alpha", "fp32"), ("gamma", "fp32"))["test"] == "clustered z"


def test_the_average_takes_every_task_into_account(board):
    out, _ = board
    comp = pl.read_parquet(out / "comparisons.parquet")
    a, b = ("alpha", "fp32"), ("gamma", "fp32")
    tasks = [pair(comp, t, a, b) for t in DISPLAY]
    avg = pair(comp, "average", a, b)
    assert avg["diff"] == pytest.approx(sum(t["diff"] for t in tasks) / 3)
    assert avg["se"] == pytest.approx(math.sqrt(sum(t["se"] ** 2 for t in tasks)) / 3)


def test_pvalues_are_adjusted_over_the_whole_board(board):
    """Holm over every pair of every task and the average: m p-values, the smallest
    multiplied by m, and never below the raw p."""
    out, _ = board
    comp = pl.read_parquet(out / "comparisons.parquet")
    rows = 4  # the complete rows: gamma/fp32, alpha/fp32, beta/fp32, gamma/bf16
    assert comp.height == (len(DISPLAY) + 1) * rows * (rows - 1) // 2
    m = comp.height
    smallest = comp.sort("p").row(0, named=True)
    assert smallest["p_adjusted"] == pytest.approx(min(1.0, m * smallest["p"]))
    assert (comp["p_adjusted"] >= comp["p"] - 1e-15).all()
    assert set(comp["adjust"]) == {"holm"}


def test_rank_intervals_and_ties_in_the_csv_and_markdown(board):
    out, _ = board
    wide = pl.read_csv(out / "leaderboard.csv")
    assert wide.columns[:4] == ["rank", "rank_low", "rank_high", "tie_group"]
    ranked = wide.filter(pl.col("rank").is_not_null())
    assert ranked.height == 4
    for r in ranked.iter_rows(named=True):
        assert r["rank_low"] <= r["rank"] <= r["rank_high"]
    # incomplete rows have no rank, so no interval
    assert wide.filter(pl.col("rank").is_null())["rank_low"].null_count() == 2
    # 10 documents per task cannot order these rows: intervals overlap, rows are tied
    assert ranked["tie_group"].n_unique() < ranked.height
    md = (out / "leaderboard.md").read_text()
    assert "| rank | rank interval | tied | model |" in md
    # alpha and beta share the average 0.2: one tie group, marked in the markdown
    tied = ranked.filter(pl.col("model").is_in(["alpha", "beta"]))["tie_group"].unique()
    assert tied.len() == 1
    assert f"| ={tied[0]} | alpha |" in md and f"| ={tied[0]} | beta |" in md
    assert "rank interval: the ranks the data allow" in md
    assert "minimum detectable effect between two rows (80 % power" in md
    # the long parquet carries each row's interval and group too
    long = pl.read_parquet(out / "leaderboard.parquet")
    got = long.select("model", "precision", "rank_low", "rank_high", "tie_group").unique()
    want = wide.select("model", "precision", "rank_low", "rank_high", "tie_group")
    assert got.sort("model", "precision").equals(want.sort("model", "precision"))


def test_the_board_is_byte_identical_when_rebuilt(board, tmp_path):
    out, scores = board
    _write_board(scores, tmp_path)
    for name in ("leaderboard.csv", "leaderboard.md", "comparisons.parquet", "comparisons.md"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_mde_per_task_is_in_the_comparisons(board):
    out, _ = board
    md = (out / "comparisons.md").read_text()
    assert "| task | documents | MDE |" in md
    # boolq: 10 documents, base rate over the 4 rows (6 + 2 + 2 + 1) / 40
    p0 = 11 / 40
    mde = (1.959963984540054 + 0.8416212335729143) * math.sqrt(2 * p0 * (1 - p0) / 10)
    assert f"| boolq | 10 | {mde:.4f} |" in md


def test_comparisons_markdown_lists_every_pair_as_the_parquet(board):
    """comparisons.md is formatted column-wise: each pair's line carries the parquet's
    numbers (b - a and interval to 4 decimals, p to 4 significant digits)."""
    out, _ = board
    comp = pl.read_parquet(out / "comparisons.parquet")
    lines = [x for x in (out / "comparisons.md").read_text().splitlines() if " · " in x]
    assert len(lines) == comp.height
    by_pair = {tuple(c.strip() for c in x.strip("|").split("|")[:3]): x for x in lines}
    for r in comp.iter_rows(named=True):
        a = f"{r['model_a']} · {r['precision_a']}"
        b = f"{r['model_b']} · {r['precision_b']}"
        cells = [c.strip() for c in by_pair[(r["task"], a, b)].strip("|").split("|")]
        assert float(cells[3].rstrip(" *")) == pytest.approx(r["diff"], abs=5e-5)
        assert cells[3].endswith("*") == r["significant"]
        lo, hi = (float(x) for x in cells[4].strip("[]").split(", "))
        assert (lo, hi) == pytest.approx((r["ci_low"], r["ci_high"]), abs=5e-5)
        assert cells[5] == f"{r['p']:.4g}" and cells[6] == f"{r['p_adjusted']:.4g}"
        assert cells[7] == r["test"]


def test_verify_proves_the_comparisons_and_names_an_edited_pair(board, tmp_path):
    out, scores = board
    checker = _Checker(out, None, fast=True)
    proven = build_long(scores, GROUPS, PROMPTING)
    checker.check_wide(
        out / "leaderboard.parquet", pl.read_parquet(out / "leaderboard.parquet"), proven, GROUPS
    )
    assert checker.report.problems == []
    comp = pl.read_parquet(out / "comparisons.parquet")
    edited = comp.with_columns(
        diff=pl.when(pl.col("task") == "boolq").then(pl.col("diff") + 0.1).otherwise("diff")
    )
    bad = tmp_path / "b"
    bad.mkdir()
    for name in ("leaderboard.parquet", "leaderboard.csv", "leaderboard.md"):
        (bad / name).write_bytes((out / name).read_bytes())
    edited.write_parquet(bad / "comparisons.parquet")
    checker = _Checker(bad, None, fast=True)
    checker.check_wide(
        bad / "leaderboard.parquet", pl.read_parquet(bad / "leaderboard.parquet"), proven, GROUPS
    )
    assert any("boolq" in p and "diff" in p for p in checker.report.problems)


def test_compare_prints_the_two_rows_task_by_task(board, capsys):
    out, _ = board
    assert cli(["compare", "alpha:fp32", "gamma:fp32", "--results", str(out)]) == 0
    text = capsys.readouterr().out
    assert "gamma · fp32  minus  alpha · fp32" in text
    line = next(x for x in text.splitlines() if x.startswith("boolq"))
    assert "+0.4000" in line and "exact McNemar" in line
    # the other order flips the sign
    assert cli(["compare", "gamma:fp32", "alpha:fp32", "--results", str(out)]) == 0
    assert "-0.4000" in next(x for x in capsys.readouterr().out.splitlines() if "boolq" in x)


@pytest.mark.parametrize(
    "a, b, says",
    [
        ("nobody", "gamma:fp32", "'nobody': no such row"),
        ("gamma", "alpha", "several precisions: name one"),
        ("alpha", "alpha:fp32", "are the same row"),
    ],
)
def test_compare_names_a_bad_row(board, capsys, a, b, says):
    out, _ = board
    assert cli(["compare", a, b, "--results", str(out)]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_equivalence_of_a_precision():
    """TOST on per-document differences against +-1 point: 400 documents with no change
    are equivalent, 4 are not shown equivalent (no change at all: the exact test, p =
    0.99^n); 40 flips to right of 100 are different; 2 flips of 20 cannot be shown
    equivalent."""
    r = _equivalence([0.0] * 400, 0.01, 0.05)
    assert r["equivalence"] == "equivalent" and r["tost_p"] == pytest.approx(0.99**400)
    assert _equivalence([0.0] * 4, 0.01, 0.05)["equivalence"] == "not shown equivalent"
    assert _equivalence([1.0] * 40 + [0.0] * 60, 0.01, 0.05)["equivalence"] == "different"
    r = _equivalence([1.0, -1.0] + [0.0] * 18, 0.01, 0.05)
    assert r["equivalence"] == "not shown equivalent" and 0.05 <= r["tost_p"] <= 1


@pytest.mark.parametrize(
    "stats, names",
    [
        ({"level": 1.5}, "statistics.level"),
        ({"equivalence_margin": 0}, "statistics.equivalence_margin"),
        ({"adjust": "bonferroni"}, "statistics.adjust"),
        ({"bootstrap": 10}, "statistics.bootstrap"),
    ],
)
def test_bad_statistics_settings_name_the_setting(stats, names):
    from llmboard.settings import SettingsError, load_settings

    cfg = {"models": {"m": {"source": "/x.gguf"}}, "tasks": {"t": None}, "statistics": stats}
    with pytest.raises(SettingsError, match=names.replace(".", r"\.")):
        load_settings(cfg, origin="config.yaml")


def test_a_board_of_one_row_writes_empty_comparisons(tmp_path):
    """Fewer than two ranked rows: comparisons.parquet has no pair and comparisons.md its
    headers alone (the workflow's one-model boards)."""
    (model, precision), tasks = next(iter(ROWS.items()))
    scores = [
        write_score(tmp_path / "scores", model, precision, task, right)
        for task, right in tasks.items()
    ]
    _write_board(scores, tmp_path)
    assert pl.read_parquet(tmp_path / "comparisons.parquet").height == 0
    md = (tmp_path / "comparisons.md").read_text()
    assert "| task | a | b | b - a |" in md and " · " not in md
