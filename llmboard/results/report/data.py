"""Everything the report shows, read from a run's files once (``read_report_data``) into
one ``ReportData`` that every page is written from (``pages``, ``figures``).

Reading fails with a ``ReportError`` naming the file that cannot be read, before
anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...workflow import layout
from . import collect
from .collect import ReportError, Run, TaskInfo

if TYPE_CHECKING:
    import polars as pl

VERIFY_MODES = ("fast", "full", "off")


@dataclass(frozen=True)
class Verification:
    """``llmboard verify``'s verdict on the board's scores."""

    mode: str  # one of VERIFY_MODES
    # (model, precision, task) -> the problems naming one of its files; empty when off
    status: dict[tuple[str, str, str], list[str]]
    problems: list[str]
    unattributed: list[str]  # problems naming no score's files
    seconds: float
    what: str  # what the mode checks, in words


@dataclass(frozen=True)
class ReportData:
    """What the report's pages show. Built once; the pages only read it."""

    leaderboard: Path  # the long board (``leaderboard.parquet``), as build_report got it
    long: pl.DataFrame  # its rows
    runs: list[Run]  # every score of the board (model x precision x task)
    runs_by_task: dict[str, list[int]]  # task -> indices into ``runs``
    tasks: dict[str, TaskInfo]  # every task and group of the board, chance levels set
    answers: dict[str, pl.DataFrame]  # task -> per run and document, the primary answer
    display: list[str]  # the board's task columns
    wide: pl.DataFrame  # one row per model x precision: raw and normalised scores, ranks
    models: list[str]  # sorted
    precisions: list[str]  # in the reference order (collect.precision_key)
    precision_comparison: pl.DataFrame  # each precision against its model's reference
    shards: pl.DataFrame  # per prediction shard, what it cost
    jobs: pl.DataFrame  # shards grouped into the inference jobs that wrote them
    benchmarks: pl.DataFrame  # Snakemake's benchmark files
    benchmarks_given: bool  # whether build_report was given a benchmarks folder
    input_files: list[Path]  # the run's own files offered as they are (``data/``)
    verification: Verification
    # every two rows of the board, paired (comparisons.parquet beside the board; empty
    # when the board has none)
    comparisons: pl.DataFrame | None = None

    @property
    def verify_summary(self) -> str:
        """Verify's verdict in a few words (every page's footer)."""
        v = self.verification
        if v.mode == "off":
            return "not run"
        if not v.problems:
            return f"all {len(self.runs)} scores pass"
        failing = sum(1 for problems in v.status.values() if problems)
        return f"{failing} of {len(self.runs)} scores fail, {len(v.problems)} problems"


def read_report_data(
    leaderboard,
    *,
    agreement=None,
    display: list[str] | None = None,
    groups: dict | None = None,
    workdir=".",
    benchmarks=None,
    tasks_dir=None,
    verify: str = "fast",
    lap: Callable[[str], None] = lambda step: None,
) -> ReportData:
    """Read the board ``leaderboard`` and every file behind it (arguments as
    ``build_report``'s); ``lap(step)`` is called as each step ends, for the timings."""
    import polars as pl

    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, not {verify!r}")
    workdir, leaderboard = Path(workdir), Path(leaderboard)
    long = collect.read_board(leaderboard)
    runs = collect.read_runs(long, workdir)
    if not runs:
        raise ReportError(f"{leaderboard}: no task rows to report")
    agreement_df = None
    if agreement is not None and Path(agreement).exists():
        try:
            agreement_df = pl.read_parquet(agreement)
        except Exception as e:  # noqa: BLE001 - polars' errors do not name the file
            raise ReportError(f"{agreement}: precision agreement not readable: {e}") from None
    display = list(display) if display else _display_of(leaderboard, long)
    groups = groups if groups is not None else _groups_from_tasks_dir(long, tasks_dir)
    tasks = collect.task_infos(runs, long, groups)
    lap("read scores")

    runs_by_task: dict[str, list[int]] = {}
    for i, r in enumerate(runs):
        runs_by_task.setdefault(r.task, []).append(i)
    answers = {t: collect.task_answers(tasks[t], runs, ids) for t, ids in runs_by_task.items()}
    collect.chances(tasks, answers, runs)
    lap("read predictions")

    params = collect.model_parameters(runs, workdir)
    wide = _with_rank_intervals(collect.wide_board(long, display, tasks, params), leaderboard)
    precision_comparison = _with_equivalence(
        collect.compare_precisions(answers, runs, agreement_df), agreement_df
    )
    comparisons = _comparisons(leaderboard)
    shards = collect.shard_costs(runs)
    bench = collect.read_benchmarks(Path(benchmarks) if benchmarks else None)
    jobs = collect.inference_jobs(shards, bench)
    lap("compare")

    verification = verify_scores(verify, leaderboard.parent, tasks_dir, runs)
    lap("verify")

    offered = (
        leaderboard.with_suffix(".csv"),
        leaderboard,
        Path(agreement) if agreement else None,
        _comparisons_file(leaderboard) if comparisons is not None else None,
    )
    return ReportData(
        leaderboard=leaderboard,
        long=long,
        runs=runs,
        runs_by_task=runs_by_task,
        tasks=tasks,
        answers=answers,
        display=display,
        wide=wide,
        models=sorted(wide["model"].unique().to_list()),
        precisions=sorted(wide["precision"].unique().to_list(), key=collect.precision_key),
        precision_comparison=precision_comparison,
        shards=shards,
        jobs=jobs,
        benchmarks=bench,
        benchmarks_given=benchmarks is not None,
        input_files=[p for p in offered if p is not None and p.exists()],
        verification=verification,
        comparisons=comparisons,
    )


def _comparisons_file(leaderboard: Path) -> Path:
    return leaderboard.with_name(layout.COMPARISONS_TABLE + ".parquet")


def _comparisons(leaderboard: Path):
    """The board's pairwise comparisons, None when it has none (a board built without)."""
    import polars as pl

    f = _comparisons_file(leaderboard)
    if not f.exists():
        return None
    try:
        return pl.read_parquet(f)
    except Exception as e:  # noqa: BLE001 - polars' errors do not name the file
        raise ReportError(f"{f}: comparisons not readable: {e}") from None


def _with_rank_intervals(wide, leaderboard: Path):
    """The wide board with the published rank interval and tie group of each row (the
    CSV beside the board), as text: ``2–4`` and ``=2`` for a group of several rows."""
    import polars as pl

    csv = leaderboard.with_suffix(".csv")
    cols = ["model", "precision", "rank_low", "rank_high", "tie_group"]
    head = pl.read_csv(csv, n_rows=0).columns if csv.exists() else []
    if not set(cols) <= set(head):
        return wide.with_columns(
            rank_interval=pl.lit(None, pl.String), tied=pl.lit(None, pl.String)
        )
    ranks = pl.read_csv(csv, columns=cols, schema_overrides={"precision": pl.String})
    sizes = ranks.group_by("tie_group").len()
    ranks = ranks.join(sizes, on="tie_group", how="left").select(
        "model",
        "precision",
        rank_interval=pl.when(pl.col("rank_low") == pl.col("rank_high"))
        .then(pl.col("rank_low").cast(pl.String))
        .otherwise(pl.format("{}–{}", "rank_low", "rank_high")),
        tied=pl.when(pl.col("len") > 1).then(pl.format("={}", "tie_group")),
    )
    return wide.join(ranks, on=["model", "precision"], how="left", maintain_order="left")


def _with_equivalence(comparison, agreement):
    """Each precision's equivalence verdict (TOST, from the precision agreement)."""
    import polars as pl

    keys = ["model", "task", "precision"]
    if agreement is None or "equivalence" not in agreement.columns:
        return comparison.with_columns(
            equivalence=pl.lit(None, pl.String), tost_p=pl.lit(None, pl.Float64)
        )
    verdicts = agreement.select(*keys, "equivalence", "tost_p")
    return comparison.join(verdicts, on=keys, how="left", maintain_order="left")


def _display_of(leaderboard: Path, long) -> list[str]:
    """The published board's task columns (its CSV's header), else every top-level task."""
    import polars as pl

    csv = leaderboard.with_suffix(".csv")
    if csv.exists():
        head = pl.read_csv(csv, n_rows=0).columns
        fixed = {"rank", "rank_low", "rank_high", "tie_group", "model", "precision"}
        fixed |= {"average", "prompting"}
        return [c for c in head if c not in fixed and not c.endswith("_stderr")]
    return sorted(set(long.filter(~pl.col("is_group"))["task"].to_list()))


def _groups_from_tasks_dir(long, tasks_dir) -> dict:
    """The board's groups as their task files define them (none without ``tasks_dir``)."""
    import polars as pl

    from ...tasks.definitions import find_task_files, group_spec, is_group

    if tasks_dir is None:
        return {}
    index = find_task_files(tasks_dir)
    names = set(long.filter(pl.col("is_group"))["task"].to_list())
    return {n: group_spec(p) for n, p in index.items() if n in names and is_group(p)}


def verify_scores(mode: str, results: Path, tasks_dir, runs: list[Run]) -> Verification:
    """``llmboard verify`` in-process; each score passes unless a problem names one of
    its files (score, prediction shards and sidecars, model folder) or its board row."""
    if mode == "off":
        return Verification(mode, {}, [], [], 0.0, "not run")
    from ..verify import verify

    rep = verify(results, tasks_dir, fast=mode == "fast")
    status, used = {}, set()
    for r in runs:
        keys = [r.score_file, *map(str, r.parquets), *map(str, r.infos)]
        mdir = r.metas[0].get("model_dir")
        if mdir:  # resources/models/{model}/{key}, converted from resources/checkpoints/...
            model, key = Path(mdir).parts[-2:]
            ckpt = layout.fill(layout.CHECKPOINT_DIR, model=model, key=key)
            keys += [f"{d.rstrip('/')}{end}" for d in (mdir, ckpt) for end in ("/", ":")]
        row = f"row {r.model}/{r.precision}/{r.task}/"
        mine = [i for i, p in enumerate(rep.problems) if row in p or any(k in p for k in keys)]
        used.update(mine)
        status[(r.model, r.precision, r.task)] = [rep.problems[i] for i in mine]
    what = (
        "sizes and hashes: score seals, prediction files against their sidecars, board rows "
        "against score files, weight files present"
        if mode == "fast"
        else "everything: weights and checkpoints re-hashed, every score recomputed from its "
        "predictions, task files and documents re-read"
    )
    return Verification(
        mode=mode,
        status=status,
        problems=rep.problems,
        unattributed=[p for i, p in enumerate(rep.problems) if i not in used],
        seconds=round(rep.seconds, 2),
        what=what,
    )
