"""The wide board (leaderboard.csv, .md) against numbers worked out here by hand.

Score files are written by the real scorer (``llmboard.tasks.scoring.score``) from small
hand-made predictions whose accuracy is known by construction (the first ``k`` of ``n``
documents answered right), so every expected cell below is plain arithmetic on those
counts, independent of polars. The board: three displayed tasks, ``arc`` (primary
``acc_norm``), ``boolq`` and ``mmlu`` (a group of two subjects of 4 and 6 documents,
size-weighted), six rows:

- gamma/fp32: complete, the best average;
- alpha/fp32 and beta/fp32: complete, equal averages (a tie);
- gamma/bf16: complete, the lowest average;
- omega/fp32: no boolq; its mean over the tasks it has is higher than every complete row's;
- aardvark/fp32: no mmlu subject at all; first by name.
"""

from __future__ import annotations

import csv
import io
import json
import math
from fractions import Fraction
from pathlib import Path

import polars as pl
import pytest

from llmboard.results.leaderboard import (
    build_long,
    build_wide,
    render_wide,
    write_leaderboard,
)
from llmboard.results.verify import _Checker
from llmboard.tasks.scoring import score

DISPLAY = ["arc", "boolq", "mmlu"]
GROUPS = {
    "mmlu": {"metric": "acc", "subgroups": {"mmlu_stem": ["mmlu_x"], "mmlu_other": ["mmlu_y"]}}
}
N = {"arc": 10, "boolq": 10, "mmlu_x": 4, "mmlu_y": 6}
PROMPTING = {"beta": "chat"}

# (model, precision) -> task -> documents right: arc as (acc, acc_norm), the others acc
ROWS = {
    ("gamma", "fp32"): {"arc": (2, 5), "boolq": 6, "mmlu_x": 2, "mmlu_y": 3},
    ("alpha", "fp32"): {"arc": (5, 1), "boolq": 2, "mmlu_x": 1, "mmlu_y": 2},
    ("beta", "fp32"): {"arc": (3, 3), "boolq": 2, "mmlu_x": 1, "mmlu_y": 0},
    ("gamma", "bf16"): {"arc": (1, 1), "boolq": 1, "mmlu_x": 0, "mmlu_y": 1},
    ("omega", "fp32"): {"arc": (10, 10), "mmlu_x": 4, "mmlu_y": 6},
    ("aardvark", "fp32"): {"arc": (8, 8), "boolq": 9},
}


# ------------------------------------------------------------------ score files
def predictions(n: int, acc: int, acc_norm: int) -> pl.DataFrame:
    """Two choices per document, gold 0; document d is right by ``acc`` iff d < acc and
    by ``acc_norm`` (log-likelihood per character) iff d < acc_norm."""
    rows = []
    for d in range(n):
        by_ll, by_norm = d < acc, d < acc_norm
        lls = [-1.0, -2.0] if by_ll else [-2.0, -1.0]
        # per character: [-1/1, -2/10] picks choice 1; [-2/10, -1/1] picks choice 0
        chars = [1, 1] if by_ll == by_norm else ([1, 10] if by_ll else [10, 1])
        for c in range(2):
            rows.append(
                {
                    "doc_id": d,
                    "choice": c,
                    "n_choices": 2,
                    "gold": 0,
                    "choice_chars": chars[c],
                    "loglikelihood": lls[c],
                }
            )
    return pl.DataFrame(rows)


def write_score(folder: Path, model: str, precision: str, task: str, right) -> str:
    """A score file written by the scorer from one prediction shard."""
    acc, acc_norm = right if isinstance(right, tuple) else (right, right)
    d = folder / model / precision / task
    d.mkdir(parents=True)
    predictions(N[task], acc, acc_norm).write_parquet(d / "0-of-1.parquet")
    info = {
        "task": task,
        "task_hash": f"h-{task}",
        "dataset_fingerprint": f"f-{task}",
        "checkpoint_sha256": f"c-{model}",
        "precision": precision,
        "n_docs_total": N[task],
        "n_shards": 1,
        "token_budget": 512,
        "final_token_budget": 512,
        "seed": 1,
        "device_map": {},
        "llmboard_version": "0",
        "git_commit": None,
        "libraries": {},
        "finished": "2025-01-01T00:00:00",
    }
    (d / "0-of-1.json").write_text(json.dumps(info))
    arc = task == "arc"
    score(
        [str(d / "0-of-1.parquet")],
        [str(d / "0-of-1.json")],
        d / "score.json",
        model=model,
        metrics=["acc", "acc_norm"] if arc else ["acc"],
        primary_metric="acc_norm" if arc else "acc",
    )
    return str(d / "score.json")


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """The score files, and the board written from them (prefix ``out/leaderboard``)."""
    root = tmp_path_factory.mktemp("board")
    scores = [
        write_score(root / "scores", model, precision, task, right)
        for (model, precision), tasks in ROWS.items()
        for task, right in tasks.items()
    ]
    write_leaderboard(scores, str(root / "out/leaderboard"), DISPLAY, GROUPS, PROMPTING)
    return root / "out/leaderboard", scores


# ------------------------------------------------------------------ by hand
def p(k: int, n: int) -> Fraction:
    return Fraction(k, n)


def se(k: int, n: int) -> float:
    """Sample sd / sqrt(n) of k ones and n - k zeros: sqrt(p (1 - p) / (n - 1))."""
    q = k / n
    return math.sqrt(q * (1 - q) / (n - 1))


def expected_cells(row: dict) -> dict[str, tuple[Fraction, float] | None]:
    """task -> (value, stderr) of the primary metric, None when the row has no score."""
    out: dict[str, tuple[Fraction, float] | None] = {}
    if "arc" in row:
        out["arc"] = (p(row["arc"][1], N["arc"]), se(row["arc"][1], N["arc"]))  # acc_norm
    else:
        out["arc"] = None
    out["boolq"] = (p(row["boolq"], 10), se(row["boolq"], 10)) if "boolq" in row else None
    if "mmlu_x" in row:
        kx, ky, nx, ny = row["mmlu_x"], row["mmlu_y"], N["mmlu_x"], N["mmlu_y"]
        # size-weighted: (n_x p_x + n_y p_y) / (n_x + n_y); lm-eval's pooled stderr
        # sqrt(sum((n_i - 1) se_i^2 n_i) / (N - k) / N), (n_i - 1) se_i^2 n_i = n_i p_i (1 - p_i)
        value = (nx * p(kx, nx) + ny * p(ky, ny)) / (nx + ny)
        var = sum(n * (k / n) * (1 - k / n) for k, n in ((kx, nx), (ky, ny)))
        out["mmlu"] = (value, math.sqrt(var / (nx + ny - 2) / (nx + ny)))
    else:
        out["mmlu"] = None
    return out


def expected_board() -> list[dict]:
    """Rows in board order with average (Fraction, None when incomplete) and rank."""
    rows = []
    for (model, precision), r in ROWS.items():
        cells = expected_cells(r)
        complete = all(cells[t] is not None for t in DISPLAY)
        average = sum(cells[t][0] for t in DISPLAY) / len(DISPLAY) if complete else None
        rows.append({"model": model, "precision": precision, "cells": cells, "average": average})
    ranked = sorted(
        (r for r in rows if r["average"] is not None),
        key=lambda r: (-r["average"], r["model"], r["precision"]),
    )
    for r in ranked:  # competition ranking: 1 + the number of strictly better averages
        r["rank"] = 1 + sum(o["average"] > r["average"] for o in ranked)
    unranked = sorted(
        (r for r in rows if r["average"] is None), key=lambda r: (r["model"], r["precision"])
    )
    for r in unranked:
        r["rank"] = None
    return ranked + unranked


def f6(x) -> str:
    return f"{float(x):.6f}"


def f4(x) -> str:
    return f"{float(x):.4f}"


# ------------------------------------------------------------------ the hand-made board itself
def test_the_hand_computed_board_is_the_one_described():
    """The worked-out numbers have the properties the tests below rely on."""
    want = {(r["model"], r["precision"]): r for r in expected_board()}
    assert want["gamma", "fp32"]["average"] == Fraction(8, 15)  # (0.5 + 0.6 + 0.5) / 3
    assert want["alpha", "fp32"]["average"] == want["beta", "fp32"]["average"] == Fraction(1, 5)
    assert want["gamma", "bf16"]["average"] == Fraction(1, 10)
    # the mean of what omega and aardvark have beats every complete row
    for key in (("omega", "fp32"), ("aardvark", "fp32")):
        have = [c[0] for c in want[key]["cells"].values() if c is not None]
        assert sum(have) / len(have) > want["gamma", "fp32"]["average"]
    # mmlu of beta: 1/4 and 0/6 weigh 4 and 6 documents: 1/10, not (1/4 + 0) / 2
    assert want["beta", "fp32"]["cells"]["mmlu"][0] == Fraction(1, 10)
    # arc's primary metric is acc_norm: alpha's acc is 5/10, its acc_norm 1/10
    assert want["alpha", "fp32"]["cells"]["arc"][0] == Fraction(1, 10)
    # in floats, the two tied averages come out apart (0.1 + 0.2 + 0.3 vs 0.3 + 0.2 + 0.1):
    # a rank taken on the raw floats would split the tie
    assert (0.1 + 0.2 + 0.3) / 3 != (0.3 + 0.2 + 0.1) / 3


# ------------------------------------------------------------------ the wide frame
def test_average_rank_and_order_against_hand_computation(board):
    prefix, scores = board
    wide = build_wide(build_long(scores, GROUPS), DISPLAY)
    want = expected_board()
    assert [(r["model"], r["precision"]) for r in wide.iter_rows(named=True)] == [
        (r["model"], r["precision"]) for r in want
    ]
    assert wide["rank"].to_list() == [1, 2, 2, 4, None, None]
    assert [r["rank"] for r in want] == [1, 2, 2, 4, None, None]
    for got, w in zip(wide.iter_rows(named=True), want):
        if w["average"] is None:
            assert got["average"] is None, got
        else:
            assert got["average"] == pytest.approx(float(w["average"]), abs=1e-12)
        for t in DISPLAY:
            cell = w["cells"][t]
            if cell is None:
                assert got[t] is None and got[f"{t}_stderr"] is None
            else:
                assert got[t] == pytest.approx(float(cell[0]), abs=1e-12)
                assert got[f"{t}_stderr"] == pytest.approx(cell[1], abs=1e-12)


def test_an_incomplete_row_never_ranks_above_a_complete_one(board):
    """omega lacks boolq and aardvark mmlu; the mean of what they have is the highest on
    the board (checked above), yet they have no average, no rank, and come last."""
    prefix, scores = board
    wide = build_wide(build_long(scores, GROUPS), DISPLAY)
    incomplete = wide.filter(pl.any_horizontal([pl.col(t).is_null() for t in DISPLAY]))
    assert sorted(incomplete["model"].to_list()) == ["aardvark", "omega"]
    assert incomplete["average"].null_count() == incomplete["rank"].null_count() == 2
    assert wide["model"].to_list()[-2:] == ["aardvark", "omega"]
    # the lowest complete row alone with one that is first by name and by partial mean
    only = [s for s in scores if "/aardvark/" in s or "/gamma/bf16/" in s]
    small = build_wide(build_long(only, GROUPS), DISPLAY)
    assert small.select("model", "precision", "rank").rows() == [
        ("gamma", "bf16", 1),
        ("aardvark", "fp32", None),
    ]


def test_a_group_missing_a_member_is_missing(board):
    """A run that scored some of a group's members only has no group value (a mean over
    fewer subjects is not the group's): its row is incomplete, not ranked on a part."""
    _, scores = board
    partial = [s for s in scores if not ("/gamma/fp32/" in s and "/mmlu_y/" in s)]
    long = build_long(partial, GROUPS)
    gamma = long.filter((pl.col("model") == "gamma") & (pl.col("precision") == "fp32"))
    assert set(gamma["task"]) == {"arc", "boolq", "mmlu_x", "mmlu_stem"}  # mmlu_stem is whole
    row = build_wide(long, DISPLAY).filter(
        (pl.col("model") == "gamma") & (pl.col("precision") == "fp32")
    )
    assert row["mmlu"].to_list() == [None] and row["rank"].to_list() == [None]
    assert row["average"].to_list() == [None]


# ------------------------------------------------------------------ the published files
def test_csv_cells_are_the_hand_computed_numbers(board):
    prefix, _ = board
    rows = list(csv.reader(io.StringIO(prefix.with_suffix(".csv").read_text())))
    head = ["rank", "model", "prompting", "precision", "average"]
    head += [c for t in DISPLAY for c in (t, f"{t}_stderr")]
    assert rows[0] == head
    want = []
    for r in expected_board():
        line = [
            "" if r["rank"] is None else str(r["rank"]),
            r["model"],
            PROMPTING.get(r["model"], "raw"),
            r["precision"],
            "" if r["average"] is None else f6(r["average"]),
        ]
        for t in DISPLAY:
            cell = r["cells"][t]
            line += ["", ""] if cell is None else [f6(cell[0]), f6(cell[1])]
        want.append(line)
    assert rows[1:] == want
    # spot checks, written out: the tie, the incomplete row, the size-weighted group
    by_key = {(r[1], r[3]): dict(zip(head, r)) for r in rows[1:]}
    assert by_key["alpha", "fp32"]["average"] == by_key["beta", "fp32"]["average"] == "0.200000"
    assert by_key["alpha", "fp32"]["rank"] == by_key["beta", "fp32"]["rank"] == "2"
    assert by_key["gamma", "bf16"]["rank"] == "4"
    assert by_key["omega", "fp32"]["rank"] == by_key["omega", "fp32"]["average"] == ""
    assert by_key["omega", "fp32"]["boolq"] == ""
    assert by_key["beta", "fp32"]["mmlu"] == "0.100000"
    assert by_key["gamma", "fp32"]["average"] == "0.533333"


def test_markdown_marks_incomplete_rows(board):
    prefix, _ = board
    lines = prefix.with_suffix(".md").read_text().splitlines()
    head = ["rank", "model", "prompting", "precision", "average", *DISPLAY]
    assert lines[0] == "| " + " | ".join(head) + " |"
    assert lines[1] == "|" + "---|" * len(head)
    want = []
    for r in expected_board():
        have = sum(r["cells"][t] is not None for t in DISPLAY)
        cells = [
            "—" if r["rank"] is None else str(r["rank"]),
            r["model"],
            PROMPTING.get(r["model"], "raw"),
            r["precision"],
            f"— ({have}/3 tasks)" if r["average"] is None else f4(r["average"]),
        ]
        for t in DISPLAY:
            c = r["cells"][t]
            cells.append("missing" if c is None else f"{f4(c[0])} ± {f4(c[1])}")
        want.append("| " + " | ".join(cells) + " |")
    assert lines[2:8] == want
    assert lines[6].startswith("| — | aardvark | raw | fp32 | — (2/3 tasks) | 0.8000 ± ")
    assert lines[6].endswith(" | missing |")
    assert lines[7] == (
        "| — | omega | raw | fp32 | — (2/3 tasks) | 1.0000 ± 0.0000 | missing | 1.0000 ± 0.0000 |"
    )
    assert lines[8:] == [
        "",
        "—: not ranked, a task is missing; an average over fewer tasks is not comparable.",
    ]


def test_a_complete_board_has_no_note_and_ranks_every_row(board, tmp_path):
    _, scores = board
    complete = [s for s in scores if "/omega/" not in s and "/aardvark/" not in s]
    write_leaderboard(complete, str(tmp_path / "lb"), DISPLAY, GROUPS)
    md = (tmp_path / "lb.md").read_text().splitlines()
    assert len(md) == 2 + 4 and "missing" not in "".join(md) and "—" not in "".join(md)
    ranks = [r[0] for r in csv.reader(io.StringIO((tmp_path / "lb.csv").read_text()))][1:]
    assert ranks == ["1", "2", "2", "4"]


# ------------------------------------------------------------------ verify's check of them
def check_wide(prefix: Path, scores: list[str], groups=GROUPS) -> list[str]:
    """verify's csv/md check of the board at ``prefix`` against ``scores``."""
    board = prefix.with_suffix(".parquet")
    checker = _Checker(board.parent, None, fast=True)
    proven = build_long(scores, groups, PROMPTING)
    checker.check_wide(board, pl.read_parquet(board), proven, groups)
    return checker.report.problems


def test_verify_accepts_the_board_with_its_incomplete_rows(board):
    prefix, scores = board
    assert check_wide(prefix, scores) == []


@pytest.mark.parametrize(
    "ext, old, new, says",
    [
        # omega raised to rank 1 in the markdown: the rank cell of its line is named
        (".md", "| — | omega |", "| 1 | omega |", "line 8 (omega/fp32), column rank: '1'"),
        # a missing cell filled in the csv
        (
            ".csv",
            "omega,raw,fp32,,1.000000,0.000000,,",
            "omega,raw,fp32,,1.000000,0.000000,0.500000,",
            "line 7 (omega/fp32), column boolq: '0.500000', its score files give ''",
        ),
    ],
)
def test_verify_names_the_file_row_and_cell(board, tmp_path, ext, old, new, says):
    prefix, scores = board
    copy = tmp_path / "leaderboard"
    for e in (".parquet", ".csv", ".md"):
        copy.with_suffix(e).write_bytes(prefix.with_suffix(e).read_bytes())
    f = copy.with_suffix(ext)
    text = f.read_text()
    assert text.count(old) == 1
    f.write_text(text.replace(old, new))
    problems = check_wide(copy, scores)
    assert problems and all(p.startswith(f"{f}: ") for p in problems), problems
    assert any(says in p for p in problems), problems


@pytest.mark.parametrize("grouped", [True, False], ids=["with-group", "no-group"])
def test_verify_names_a_task_column_dropped_from_both_files(board, tmp_path, grouped):
    """Without boolq, omega would look complete and rank first: a board's every top-level
    task must have its column (known from the group files, or from a board with no group)."""
    _, scores = board
    if not grouped:
        scores = [s for s in scores if "/mmlu_" not in s]
    groups, display = (GROUPS, DISPLAY) if grouped else ({}, ["arc", "boolq"])
    prefix = tmp_path / "leaderboard"
    write_leaderboard(scores, str(prefix), display, groups, PROMPTING)
    assert check_wide(prefix, scores, groups) == []
    long = build_long(scores, groups, PROMPTING)
    csv_text, md_text = render_wide(long, [t for t in display if t != "boolq"])
    prefix.with_suffix(".csv").write_text(csv_text)
    prefix.with_suffix(".md").write_text(md_text)
    assert "| 1 | omega |" in md_text  # what the dropped column would publish
    assert check_wide(prefix, scores, groups) == [
        f"{prefix.with_suffix('.csv')}: has no column for boolq, a task of "
        f"{prefix.with_suffix('.parquet')}"
    ]
