"""Every published number is proven from the files on disk, and every damaged file or
bad input is named: a real workflow run, then each kind of damage made here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import polars as pl
import pytest
import yaml

from llmboard.cli import main as cli

from conftest import save_tiny
from test_workflow import _make_tasks
from workspace import Workspace

pytestmark = pytest.mark.slow

LLMBOARD = [sys.executable, "-m", "llmboard.cli"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tokenizer_dir):
    root = tmp_path_factory.mktemp("verify")
    w = Workspace(root)
    w.tasks = _make_tasks(root)
    w.models = {"llama": save_tiny("llama", root / "src", tokenizer_dir)}
    w.cfg = {
        "models": {"tiny-llama": {"source": str(w.models["llama"])}},
        "precisions": ["fp32"],
        "tasks": {"add": {"shards": 2}, "grp": None},
        "tasks_dir": str(w.tasks),
        "inference": {"token_budget": 512, "threads": 1},
    }
    w.write_config(w.cfg)
    w.snakemake()
    return w


def verify(ws, capsys, *extra) -> tuple[int, str]:
    rc = cli(["verify", str(ws.wd / "results"), "--tasks-dir", str(ws.tasks), *extra])
    return rc, capsys.readouterr().out


def flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def a_score_file(ws, task="add"):
    return next(p for p in (ws.wd / "results/scores").rglob(f"{task}/*.json"))


def test_a_clean_run_is_proven_in_full_and_fast(ws, capsys):
    for mode in ((), ("--fast",), ("--all",)):
        rc, out = verify(ws, capsys, *mode)
        assert rc == 0, out
        assert out.splitlines()[-1].endswith("OK")
    # every task row of the published board names the score file it came from
    long = pl.read_parquet(ws.wd / "results/leaderboard.parquet")
    assert long.filter(~pl.col("is_group"))["score_file"].null_count() == 0


def test_a_tampered_score_is_named_and_never_published(ws, capsys):
    sp = a_score_file(ws)
    original = sp.read_text()
    s = json.loads(original)
    s["metrics"]["acc"]["value"] = 0.99
    sp.write_text(json.dumps(s))
    published = (ws.wd / "results/leaderboard.csv").read_bytes()
    try:
        rc, out = verify(ws, capsys, "--fast")
        assert rc == 1 and f"{sp}: content does not match its content_sha256" in out
        run = ws.snakemake(check=False)  # the score's mtime is newer: the board is rebuilt
        assert run.returncode != 0
        log = "".join(p.read_text() for p in (ws.wd / "logs/leaderboard").glob("*.log"))
        assert str(sp.relative_to(ws.wd)) in log and "refused" in log
        assert (ws.wd / "results/leaderboard.csv").read_bytes() == published
        # sealed again but with another number: the recomputation catches it
        from llmboard.hashing import seal

        s.pop("content_sha256")
        sp.write_text(json.dumps(seal(s)))
        rc, out = verify(ws, capsys)
        assert rc == 1 and f"{sp}: acc = 0.99" in out and "recomputed from its predictions" in out
    finally:
        sp.write_text(original)
    ws.snakemake()  # back to a good board


def test_a_truncated_prediction_file_is_named(ws, capsys):
    parquet = next((ws.wd / "results/predictions").rglob("add/*/0-of-2.parquet"))
    original = parquet.read_bytes()
    parquet.write_bytes(original[: len(original) // 2])
    try:
        for mode in ((), ("--fast",)):
            rc, out = verify(ws, capsys, *mode)
            assert rc == 1 and f"{parquet}: " in out and "truncated or rewritten" in out
        # a forced re-score names the damaged file
        sp = a_score_file(ws)
        saved = sp.read_bytes()
        sp.unlink()
        run = ws.snakemake(check=False)
        assert run.returncode != 0
        log = "".join(p.read_text() for p in (ws.wd / "logs/score").rglob("*.log"))
        assert str(parquet.relative_to(ws.wd)) in log and "differs from what was written" in log
        sp.write_bytes(saved)
    finally:
        parquet.write_bytes(original)
    rc, out = verify(ws, capsys)
    assert rc == 0, out
    ws.snakemake()  # the restored score is newer than the board: rebuilt, same numbers


def test_an_edited_leaderboard_row_is_named(ws, capsys):
    board = ws.wd / "results/leaderboard.parquet"
    original = board.read_bytes()
    long = pl.read_parquet(board)
    long.with_columns(
        value=pl.when(pl.col("task") == "grp").then(0.5).otherwise(pl.col("value"))
    ).write_parquet(board)
    try:
        rc, out = verify(ws, capsys, "--fast")
        assert rc == 1 and f"{board}: row tiny-llama/fp32/grp/acc = 0.5" in out
    finally:
        board.write_bytes(original)


def _edit_cell(path, line: int, column: int, value: str) -> None:
    """Set one cell of a csv or markdown table (line and column from 0)."""
    lines = path.read_text().splitlines(keepends=True)
    if path.suffix == ".csv":
        cells = lines[line].rstrip("\n").split(",")
        cells[column] = value
        lines[line] = ",".join(cells) + "\n"
    else:
        cells = lines[line].rstrip("\n")[2:-2].split(" | ")
        cells[column] = value
        lines[line] = "| " + " | ".join(cells) + " |\n"
    path.write_text("".join(lines))


def test_an_edited_cell_of_the_csv_or_md_board_is_named(ws, capsys):
    """leaderboard.csv and .md (what `make leaderboard` prints) are proven cell by cell,
    the published ones by default and the copies under results/boards with --all."""
    published = ws.wd / "results"
    copy = next((published / "boards").glob("*/leaderboard.md"))
    # (file, table line, average's column, the value written there, the verify mode)
    edits = [
        (published / "leaderboard.csv", 1, 4, "0.999999", ("--fast",)),
        (published / "leaderboard.md", 2, 4, "0.9999", ()),
        (copy, 2, 4, "0.9999", ("--fast", "--all")),
    ]
    for f, line, column, value, mode in edits:
        before, stat = f.read_bytes(), f.stat()
        _edit_cell(f, line, column, value)
        try:
            rc, out = verify(ws, capsys, *mode)
            named = [p for p in out.splitlines() if p.startswith(f"{f}: ")]
            assert rc == 1 and named == [
                f"{f}: line {line + 1} (tiny-llama/fp32), column average: {value!r}, its "
                f"score files give {_cell(before, f.suffix, line, column)!r}"
            ], out
            assert len(out.splitlines()) == 2, out  # that problem and the summary line
        finally:
            f.write_bytes(before)
            os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # nothing to rerun
    assert verify(ws, capsys, "--fast", "--all")[0] == 0


def _cell(data: bytes, suffix: str, line: int, column: int) -> str:
    row = data.decode().splitlines()[line]
    return (row.split(",") if suffix == ".csv" else row[2:-2].split(" | "))[column]


def test_stale_task_file_and_changed_weights_are_named(ws, capsys):
    sub = ws.tasks / "sub_a.yaml"
    original = sub.read_text()
    sub.write_text(original.replace("Answer:", "Answer :"))
    try:
        rc, out = verify(ws, capsys)
        assert rc == 1 and "stale: " in out and "sub_a.yaml now hashes to" in out
    finally:
        sub.write_text(original)
    weights = next((ws.wd / "resources/models/tiny-llama").iterdir()) / "model.safetensors"
    flip_last_byte(weights)
    try:
        rc, out = verify(ws, capsys)
        assert rc == 1 and f"{weights}: sha256 differs from its manifest" in out
    finally:
        flip_last_byte(weights)
    assert verify(ws, capsys)[0] == 0


def test_a_changed_local_checkpoint_is_evaluated_again(ws, capsys):
    """The same source path with other bytes is another checkpoint: verify says so, and
    the next run fetches, converts, infers and scores that model again (and only it)."""
    src = ws.models["llama"] / "model.safetensors"
    fetched = next((ws.wd / "resources/checkpoints/tiny-llama").iterdir())
    before = (fetched / "model.safetensors").read_bytes()
    flip_last_byte(src)
    try:
        assert (fetched / "model.safetensors").read_bytes() == before  # a copy, not a link
        rc, out = verify(ws, capsys)
        assert rc == 1 and "local source changed since it was fetched" in out
        rules = sorted(r for r, _ in ws.planned_jobs())
        assert rules == sorted(
            [
                "fetch",
                "convert",
                "infer",
                "infer",
                "score",
                "leaderboard",
                "precision_agreement",
                "publish_leaderboard",
                "report",
                "publish_report",
            ]
        ), rules
    finally:
        flip_last_byte(src)
    assert ws.planned_jobs() == set()  # same bytes again (new mtime): the same key


def test_bad_task_files_are_named_before_anything_runs(ws):
    bad = ws.tasks / "add.yaml"
    original = bad.read_text()
    try:
        for text, says in (
            ("- just\n- a list\n", "must be a mapping of task fields"),
            ("task: add\ndoc_to_text: [unclosed\n", "not valid YAML (line 3"),
        ):
            bad.write_text(text)
            run = ws.snakemake("--dry-run", check=False)
            assert run.returncode != 0 and f"{bad}: {says}" in run.stdout + run.stderr
            (ws.wd / "config.yaml").write_text(yaml.safe_dump(ws.cfg))
            jobs = subprocess.run(
                [
                    *LLMBOARD,
                    "jobs",
                    "--config",
                    str(ws.wd / "config.yaml"),
                    "--workdir",
                    str(ws.wd),
                ],
                capture_output=True,
                text=True,
            )
            assert jobs.returncode == 2 and f"{bad}: {says}" in jobs.stderr
            assert "Traceback" not in jobs.stderr
    finally:
        bad.write_text(original)


def test_bad_config_and_missing_source_are_named(ws, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("models: {a: {source: x}\ntasks: [\n")
    run = subprocess.run([*LLMBOARD, "jobs", "--config", str(cfg)], capture_output=True, text=True)
    assert run.returncode == 2 and f"{cfg}: not valid YAML (line" in run.stderr
    assert "Traceback" not in run.stderr
    gone = {**ws.cfg, "models": {"ghost": {"source": str(tmp_path / "no-such-checkpoint")}}}
    ws.write_config(gone)
    try:
        run = ws.snakemake("--dry-run", check=False)
        out = run.stdout + run.stderr
        assert run.returncode != 0 and "models.ghost.source" in out and "no-such-checkpoint" in out
    finally:
        ws.write_config(ws.cfg)
    shutil.rmtree(tmp_path, ignore_errors=True)
