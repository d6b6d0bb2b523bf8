"""Aggregate score files into leaderboards, with polars expressions end to end.

Outputs (byte-identical for the same score files: every sort is on all key
columns, and no build timestamp is written):
- leaderboard.parquet: long form, one row per model x precision x task x metric
  (task groups such as MMLU included, ``is_group`` true), with provenance and
  ``prompting`` (how the model entry's prompts were rendered: ``raw``, ``chat``, ...).
- leaderboard.csv / leaderboard.md: wide, one row per model x precision, its
  prompting, one column per displayed task (its primary metric), an average and a rank.

A row with a score for every displayed task is complete: ``average`` is the unweighted
mean of its task columns, and complete rows are ranked by that average as the CSV
publishes it (6 decimals), equal averages sharing a rank (1, 1, 3). A row that lacks any
displayed task is incomplete: an average over fewer tasks is not comparable, so its
``average`` and ``rank`` are empty and it comes after every complete row (by model,
precision). The markdown marks it: ``—`` for rank, ``— (k/N tasks)`` for the average,
``missing`` in each task cell it lacks.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import atomic_path, write_text
from ..hashing import SEAL, is_sealed
from ..tasks.metrics import LOWER_IS_BETTER, pooled_stderr

KEYS = ["model", "precision", "task", "metric"]
RAW_LABEL = "raw"  # settings.Prompting().label: prompts without a chat template
PROVENANCE = [
    "checkpoint_sha256",
    "dataset_fingerprint",
    "task_hash",
    "llmboard_version",
    "git_commit",
    "torch",
    "transformers",
    "accelerate",
    "bitsandbytes",
    "token_budget",
    "seed",
    "run_finished",
    "score_file",
]  # what `llmboard verify` checks each row against (null: a group)


class LeaderboardError(ValueError):
    """A score file that cannot be published; the message names it."""


def read_score(path: str | Path) -> dict:
    """A score file, refused (naming it) when unreadable or when its content no longer
    matches the hash it was sealed with: an edited number is never published."""
    try:
        s = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise LeaderboardError(f"{path}: score file not readable: {e}") from None
    if SEAL not in s:
        raise LeaderboardError(
            f"{path}: has no {SEAL} (written by an older llmboard); delete it and rerun to re-score"
        )
    if not is_sealed(s):
        raise LeaderboardError(
            f"{path}: content does not match its {SEAL} (edited after scoring?); refused. "
            "Delete it and rerun to re-score from the predictions"
        )
    return s


def _score_rows(paths: list[str]) -> list[dict]:
    rows = []
    for p in paths:
        s = read_score(p)
        prov = s["provenance"]
        libs = prov.get("libraries", {})
        for metric, v in sorted(s["metrics"].items()):
            rows.append(
                {
                    "model": s["model"],
                    "precision": s["precision"],
                    "task": s["task"],
                    "metric": metric,
                    "value": float(v["value"]),
                    "stderr": float(v["stderr"]),
                    "n": int(s["n"]),
                    "is_group": False,
                    "primary": metric == s["primary_metric"],
                    "checkpoint_sha256": prov["checkpoint_sha256"],
                    "dataset_fingerprint": prov["dataset_fingerprint"],
                    "task_hash": prov["task_hash"],
                    "llmboard_version": prov["llmboard_version"],
                    "git_commit": prov["git_commit"],
                    "torch": libs.get("torch"),
                    "transformers": libs.get("transformers"),
                    "accelerate": libs.get("accelerate"),
                    "bitsandbytes": libs.get("bitsandbytes"),
                    "token_budget": ",".join(str(b) for b in prov["token_budget"]),
                    "seed": int(prov["seed"]),
                    "run_finished": prov["run_finished"],
                    "score_file": str(p),
                }
            )
    return rows


def _group_frame(long, name: str, members: list[str], metric: str):
    """Size-weighted mean of members' ``metric`` with lm-eval's pooled stderr, for the
    runs that scored every member: a group over fewer members is not the group (a
    model with 50 of 57 MMLU subjects has no ``mmlu``, so its row is incomplete)."""
    import polars as pl

    sub = long.filter(pl.col("task").is_in(members) & (pl.col("metric") == metric))
    n = pl.col("n")
    return (
        sub.group_by(["model", "precision"])
        .agg(
            value=(pl.col("value") * n).sum() / n.sum(),
            stderr=pooled_stderr(pl.col("stderr"), n),
            n=n.sum(),
            members=pl.col("task").n_unique(),
        )
        .filter(pl.col("members") == len(set(members)))
        .with_columns(
            task=pl.lit(name), metric=pl.lit(metric), is_group=pl.lit(True), primary=pl.lit(True)
        )
    )


def build_long(
    score_paths: list[str],
    groups: dict[str, dict] | None = None,
    prompting: dict[str, str] | None = None,
):
    """Long table; ``groups`` maps a group name to {"metric", "subgroups": {name: [tasks]}},
    ``prompting`` a model to its prompting label (``raw`` when not given)."""
    import polars as pl

    long = pl.DataFrame(_score_rows(score_paths), infer_schema_length=None)
    if long.is_empty():
        raise ValueError("no scores to aggregate")
    parts = [long]
    for gname, g in sorted((groups or {}).items()):
        metric = g["metric"]
        sub_frames = []
        for sname, members in sorted(g["subgroups"].items()):
            f = _group_frame(long, sname, members, metric)
            if f.height:
                sub_frames.append(f)
        if not sub_frames:
            continue
        subs = pl.concat(sub_frames, how="diagonal_relaxed")
        all_members = [t for ms in g["subgroups"].values() for t in ms]
        top = _group_frame(long, gname, all_members, metric)
        parts += [subs.drop("members"), top.drop("members")]
    out = pl.concat(parts, how="diagonal_relaxed").with_columns(
        prompting=pl.col("model").replace_strict(
            prompting or {}, default=RAW_LABEL, return_dtype=pl.String
        )
    )
    cols = KEYS + ["prompting", "value", "stderr", "n", "is_group", "primary"] + PROVENANCE
    # score_file last: a board built from several score files of one task (superseded ones
    # included) still has one order
    return out.select(cols).sort([*KEYS, "score_file"], nulls_last=True, maintain_order=True)


AVERAGE_DECIMALS = 6  # the CSV's precision: rows equal there share a rank
MISSING = "missing"  # a markdown cell with no score
UNRANKED = "—"  # the markdown's rank and average of an incomplete row


def average_of(columns: list[str], averaged: list[str] | None = None):
    """The unweighted mean of ``averaged`` (default: all ``columns``) where a row has
    every one of ``columns``, else null (a mean over fewer tasks is not comparable): a
    polars expression. Null for every row when nothing is averaged."""
    import polars as pl

    averaged = columns if averaged is None else averaged
    if not averaged:
        return pl.lit(None, dtype=pl.Float64)
    complete = pl.all_horizontal([pl.col(c).is_not_null() for c in columns])
    return pl.when(complete).then(pl.mean_horizontal([pl.col(c) for c in averaged]))


def averaged_tasks(long, display: list[str]) -> list[str]:
    """The displayed tasks the average takes: those whose primary metric is higher-is-
    better (a perplexity is shown, never averaged with accuracies)."""
    import polars as pl

    lower = set(
        long.filter(pl.col("primary") & pl.col("metric").is_in(list(LOWER_IS_BETTER)))["task"]
    )
    return [t for t in display if t not in lower]


def rank_of(average):
    """1 for the highest ``average`` (an expression), equal ones to the CSV's precision
    sharing a rank (1, 1, 3); null where the average is null."""
    import polars as pl

    return average.round(AVERAGE_DECIMALS).rank("min", descending=True).cast(pl.Int64)


def build_wide(long, display: list[str]):
    """One row per model x precision; primary metric of each displayed task; average (of
    the higher-is-better ones, ``averaged_tasks``); rank.

    Complete rows first, by average (descending), then model and precision; incomplete
    rows (a displayed task missing) after them, with no average and no rank."""
    import polars as pl

    prim = long.filter(pl.col("primary") & pl.col("task").is_in(display))
    models = prim.select("model", "precision").unique().sort(["model", "precision"])
    wide = models
    for t in display:
        col = prim.filter(pl.col("task") == t).select(
            "model", "precision", pl.col("value").alias(t), pl.col("stderr").alias(f"{t}_stderr")
        )
        wide = wide.join(col, on=["model", "precision"], how="left")
    wide = wide.with_columns(average=average_of(display, averaged_tasks(long, display)))
    wide = wide.with_columns(rank=rank_of(pl.col("average")))
    wide = wide.sort(["rank", "model", "precision"], nulls_last=True).select(
        ["rank", "model", "precision", "average"] + [c for t in display for c in (t, f"{t}_stderr")]
    )
    return wide


def tasks_present(row: dict, display: list[str]) -> int:
    """How many of the displayed tasks a wide row has a score for."""
    return sum(row[t] is not None for t in display)


def with_prompting(wide, long):
    """The wide board with each row's ``prompting`` after ``model``."""
    import polars as pl

    labels = long.select("model", "prompting").unique()
    out = wide.join(labels, on="model", how="left", maintain_order="left").with_columns(
        pl.col("prompting").fill_null(RAW_LABEL)
    )
    cols = wide.columns
    at = cols.index("model") + 1
    return out.select([*cols[:at], "prompting", *cols[at:]])


def _fmt(x) -> str:
    return "" if x is None or x != x else f"{x:.4f}"


def _rank_interval(r: dict) -> str:
    low, high = r.get("rank_low"), r.get("rank_high")
    if low is None:
        return ""
    return str(low) if low == high else f"{low}–{high}"


def to_markdown(wide, display: list[str]) -> str:
    prompting = "prompting" in wide.columns
    intervals = "rank_low" in wide.columns
    head = ["rank"] + (["rank interval", "tied"] if intervals else [])
    head += ["model", *(["prompting"] if prompting else []), "precision", "average"]
    head += display
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    incomplete = False
    tied = _tied_groups(wide) if intervals else set()
    for r in wide.iter_rows(named=True):
        have = tasks_present(r, display)
        if have == len(display):
            rank, average = str(r["rank"]), _fmt(r["average"])
        else:
            incomplete = True
            rank, average = UNRANKED, f"{UNRANKED} ({have}/{len(display)} tasks)"
        cells = [rank]
        if intervals:
            group = r["tie_group"]
            cells += [_rank_interval(r), f"={group}" if group in tied else ""]
        cells += [r["model"], *([r["prompting"]] if prompting else [])]
        cells += [r["precision"], average]
        for t in display:
            cells.append(MISSING if r[t] is None else f"{_fmt(r[t])} ± {_fmt(r[f'{t}_stderr'])}")
        lines.append("| " + " | ".join(cells) + " |")
    if intervals:
        lines += [
            "",
            "rank interval: the ranks the data allow (95 % document bootstrap, stratified by "
            "task); rows marked with the same =k cannot be told apart (each one's rank lies "
            "in the other's interval). Pairwise differences: comparisons.md.",
        ]
    if incomplete:
        lines += [
            "",
            f"{UNRANKED}: not ranked, a task is {MISSING}; an average over fewer "
            "tasks is not comparable.",
        ]
    return "\n".join(lines) + "\n"


def _tied_groups(wide) -> set:
    """The tie groups with more than one row (a group of one is just a rank)."""
    groups = [g for g in wide["tie_group"].to_list() if g is not None]
    return {g for g in groups if groups.count(g) > 1}


def render_board(long, display: list[str], groups: dict | None = None, stats: dict | None = None):
    """The texts of leaderboard.csv and leaderboard.md for the long board ``long``, and
    the board's statistics (``board_statistics``: rank intervals and tie groups in the
    wide board; the comparisons and the tasks' minimum detectable effects) when
    ``stats`` (the config's ``statistics``) is given. ``llmboard verify`` rebuilds the
    published files with this. Returns ``{"csv", "md", "comparisons", "tasks"}``."""
    import polars as pl

    from .board_statistics import board_statistics

    wide = with_prompting(build_wide(long, display), long)
    comparisons = tasks = None
    if stats is not None:
        complete = wide.filter(pl.col("rank").is_not_null())
        rows = list(zip(complete["model"], complete["precision"]))
        out = board_statistics(
            long, display, averaged_tasks(long, display), groups or {}, rows, stats
        )
        if out is not None:
            ranks, comparisons, tasks = out
            wide = wide.join(ranks, on=["model", "precision"], how="left", maintain_order="left")
            # the interval holds the published rank (ties at the CSV's 6 decimals)
            wide = wide.with_columns(
                rank_low=pl.min_horizontal("rank_low", "rank"),
                rank_high=pl.max_horizontal("rank_high", "rank"),
            )
            at = wide.columns.index("rank") + 1
            extra = ["rank_low", "rank_high", "tie_group"]
            rest = [c for c in wide.columns[at:] if c not in extra]
            wide = wide.select([*wide.columns[:at], *extra, *rest])
    csv = wide.with_columns(pl.col(pl.Float64).round(AVERAGE_DECIMALS))
    md = to_markdown(wide, display)
    if tasks is not None:  # beside the scores: how large a difference each task can see
        cells = [
            f"{r['task']} {'—' if r['mde'] is None else format(r['mde'], '.3f')}"
            for r in tasks.iter_rows(named=True)
        ]
        md += (
            "\nminimum detectable effect between two rows (80 % power, its documents): "
            + ", ".join(cells)
            + ".\n"
        )
    return {
        "csv": csv.write_csv(float_precision=AVERAGE_DECIMALS),
        "md": md,
        "wide": wide,
        "comparisons": comparisons,
        "tasks": tasks,
    }


def render_wide(long, display: list[str]) -> tuple[str, str]:
    """leaderboard.csv and leaderboard.md without the statistics (``render_board``)."""
    board = render_board(long, display)
    return board["csv"], board["md"]


def comparisons_markdown(comparisons, tasks) -> str:
    """comparisons.md: each task's minimum detectable effect, then every pair of rows on
    the average and each task: b - a, its 95 % interval, p and the board-adjusted p."""
    import polars as pl

    level = comparisons["level"][0] if comparisons.height else 0.95
    adjust = comparisons["adjust"][0] if comparisons.height else "holm"
    lines = [
        f"Minimum detectable effect (80 % power, two-sided alpha {1 - level:.2f}) at each "
        "task's documents (the smallest difference between two rows a test would "
        "detect; unpaired, from the task's mean over the board's rows):",
        "",
        "| task | documents | MDE |",
        "|---|---|---|",
    ]
    for r in tasks.iter_rows(named=True):
        mde = "— (no spread)" if r["mde"] is None else f"{r['mde']:.4f}"
        lines.append(f"| {r['task']} | {r['documents']} | {mde} |")
    lines += [
        "",
        f"Paired differences (b - a) on the documents both rows scored; p adjusted over the "
        f"whole board ({adjust}); * significant at {1 - level:.2f}:",
        "",
        "| task | a | b | b - a | 95 % interval | p | p adjusted | test |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if not comparisons.height:  # a board of fewer than two rows: the header alone
        return "\n".join(lines) + "\n"
    order = comparisons.with_columns(first=pl.col("task") != "average").sort(
        ["first", "task", "p_adjusted", "model_a", "precision_a", "model_b", "precision_b"]
    )
    # formatted column-wise (a 300-row board has 2.7 million pairs: a Python loop over
    # them took 13 s of the leaderboard's 23)
    table = order.select(
        pl.format(
            "| {} | {} · {} | {} · {} | {}{} | [{}, {}] | {} | {} | {} |",
            "task",
            "model_a",
            "precision_a",
            "model_b",
            "precision_b",
            _fixed(pl.col("diff")),
            pl.when("significant").then(pl.lit(" *")).otherwise(pl.lit("")),
            _fixed(pl.col("ci_low")),
            _fixed(pl.col("ci_high")),
            pl.lit(_general(order["p"])),
            pl.lit(_general(order["p_adjusted"])),
            "test",
        )
    ).to_series()
    return "\n".join([*lines, *table.to_list()]) + "\n"


def _fixed(x, digits: int = 4):
    """Python's ``f"{x:+.{digits}f}"`` as a polars expression (NaN: ``nan``)."""
    import polars as pl

    scaled = (x.abs() * 10**digits).round(0).cast(pl.Int64)
    whole = (scaled // 10**digits).cast(pl.String)
    frac = (scaled % 10**digits).cast(pl.String).str.zfill(digits)
    sign = pl.when(x < 0).then(pl.lit("-")).otherwise(pl.lit("+"))
    text = pl.concat_str(sign, whole, pl.lit("."), frac)
    return pl.when(x.is_finite()).then(text).otherwise(x.cast(pl.String))


def _general(values):
    """Python's ``f"{x:.4g}"`` of each value (p-values: 0.0312, 1, 2.397e-255)."""
    import polars as pl

    return pl.Series([None if x is None else f"{x:.4g}" for x in values.to_list()])


def write_leaderboard(
    score_paths: list[str],
    out_prefix: str,
    display: list[str],
    groups: dict | None = None,
    prompting: dict[str, str] | None = None,
    stats: dict | None = None,
    comparisons_prefix: str | None = None,
) -> None:
    """``prompting``: model -> label (``WorkflowPlan.prompting_labels``); ``raw`` if not
    given. ``stats``: the config's ``statistics``; with ``comparisons_prefix``, the
    board's comparisons are written there (.parquet, .md)."""
    long = build_long(sorted(score_paths), groups, prompting)
    board = render_board(long, display, groups, stats)
    if "rank_low" in board["wide"].columns:  # each row's rank interval and tie group too
        ranks = board["wide"].select("model", "precision", "rank_low", "rank_high", "tie_group")
        long = long.join(ranks, on=["model", "precision"], how="left", maintain_order="left")
    with atomic_path(f"{out_prefix}.parquet") as tmp:
        long.write_parquet(tmp, statistics=False)
    write_text(f"{out_prefix}.csv", board["csv"])
    write_text(f"{out_prefix}.md", board["md"])
    if comparisons_prefix is not None:
        comparisons, tasks = board["comparisons"], board["tasks"]
        if comparisons is None:  # fewer than two complete rows: nothing to compare
            comparisons, tasks = _empty_comparisons()
        with atomic_path(f"{comparisons_prefix}.parquet") as tmp:
            comparisons.write_parquet(tmp, statistics=False)
        write_text(f"{comparisons_prefix}.md", comparisons_markdown(comparisons, tasks))


def _empty_comparisons():
    import polars as pl

    return pl.DataFrame(
        schema={
            "model_a": pl.String,
            "precision_a": pl.String,
            "model_b": pl.String,
            "precision_b": pl.String,
            "task": pl.String,
            "test": pl.String,
            "diff": pl.Float64,
            "level": pl.Float64,
            "adjust": pl.String,
            "significant": pl.Boolean,
            "p_adjusted": pl.Float64,
        }
    ), pl.DataFrame(schema={"task": pl.String, "documents": pl.Int64, "mde": pl.Float64})
