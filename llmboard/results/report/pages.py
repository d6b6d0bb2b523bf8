"""The report's pages, each written from the collected ``ReportData`` by one function.

``PAGES`` lists the pages of the header, in its order. Each has a template of its own
name (``templates/``, extending ``base.html``) and a function returning that template's
context, which first writes any file the page alone links to (the task pages, their
tables and instances). ``render_page`` renders every page, adding what all of them
show: the header's links and the footer. Adding a page: a template, a function, and an
entry in ``PAGES``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ... import __version__
from ...workflow import layout
from . import collect, figures, markup
from .data import ReportData

DATA_DIR = "data"  # the run's own files as they are, and the report's CSVs
TASK_PAGES = "tasks"  # {task}.html and the {task}.instances.js it loads on demand


@dataclass(frozen=True)
class Page:
    """A page linked from every page's header."""

    file: str  # at the report's root, rendered from the template of the same name
    title: str  # its link's text and its <title>
    context: Callable[[Path, ReportData], dict]  # (report folder, data) -> template context

    @property
    def key(self) -> str:
        """Its ``data-page``: the header marks the link of the page it is on."""
        return self.file.removesuffix(".html")


def render_page(
    out: Path, data: ReportData, template: str, path: str, *, title: str, key: str, **context
) -> None:
    """Write ``out/path`` from ``template`` with ``context`` and what every page shows:
    the header's links (``key``'s marked), the footer (version, scores, verify's
    verdict); links are relative to the page's folder, so the report opens from disk."""
    html = (
        markup.environment()
        .get_template(template)
        .render(
            root="../" * path.count("/"),
            nav=[(p.file, p.title, p.key) for p in PAGES],
            itables_key=markup.itables_key(),
            title=title,
            page=key,
            version=__version__,
            n_scores=len(data.runs),
            verify_mode=data.verification.mode,
            verify_summary=data.verify_summary,
            **context,
        )
    )
    target = out / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(html, encoding="utf-8")


def write_page(out: Path, data: ReportData, page: Page) -> None:
    """Write ``page``: its context first (and with it the files the page links to)."""
    render_page(
        out, data, page.file, page.file, title=page.title, key=page.key, **page.context(out, data)
    )


# ---------------------------------------------------------------- data files
def write_data_files(out: Path, data: ReportData) -> None:
    """The files the leaderboard page offers for download (``_downloads``)."""
    import polars as pl

    (out / DATA_DIR).mkdir()
    for src in data.input_files:
        shutil.copyfile(src, out / DATA_DIR / src.name)
    data.wide.with_columns(pl.col(pl.Float64).round(6)).write_csv(
        out / layout.REPORT_LEADERBOARD_CSV
    )
    data.precision_comparison.write_csv(out / layout.REPORT_PRECISION_CSV)


def _downloads(data: ReportData) -> list[tuple[str, str]]:
    """(path, label) of each file ``write_data_files`` writes."""
    return [(f"{DATA_DIR}/{src.name}", src.name) for src in data.input_files] + [
        (layout.REPORT_LEADERBOARD_CSV, "leaderboard with normalised scores (CSV)"),
        (layout.REPORT_PRECISION_CSV, "precision comparison (CSV)"),
    ]


# ---------------------------------------------------------------- leaderboard
def leaderboard_page(out: Path, data: ReportData) -> dict:
    table, columns = _leaderboard_table(data.wide, data.display)
    return {
        "n_models": len(data.models),
        "precisions": data.precisions,
        "display": data.display,
        "downloads": _downloads(data),
        "columns_json": json.dumps(columns),
        "table": table,
        "heatmaps": figures.heatmap_files(data.precisions),
    }


def _leaderboard_table(wide, display: list[str]) -> tuple[str, list[dict]]:
    """The board's DataTable, every column in it (raw and normalised scores, stderrs),
    and per column what report.js needs to switch between raw and normalised and to
    filter by task."""
    import polars as pl
    from itables import JavascriptFunction

    cols, meta = [], []

    def add(expr, name, **m):
        cols.append(expr.alias(name))
        meta.append({"mode": None, "task": None, "rank": False, "hidden": False, **m})

    add(pl.col("rank"), "rank", mode="raw", rank=True)
    add(pl.col("rank_norm"), "rank (norm.)", mode="norm", rank=True)
    # the published rank interval and tie group (raw scores: the board's statistics)
    add(pl.col("rank_interval"), "rank interval", mode="raw")
    add(pl.col("tied"), "tied", mode="raw")
    add(pl.col("model"), "model")
    add(pl.col("prompting"), "prompting")
    add(pl.col("precision"), "precision")
    add((pl.col("parameters") / 1e6).round(1), "parameters (M)")
    add(pl.col("average"), "average", mode="raw")
    add(pl.col("average_norm"), "average (norm.)", mode="norm")
    for t in display:
        add(pl.col(t), t, mode="raw", task=t)
    for t in display:
        add(pl.col(f"{t}_norm"), f"{t} (norm.)", mode="norm", task=t)
    for t in display:
        add(pl.col(f"{t}_stderr"), f"{t} stderr", hidden=True)
    for t in display:
        add(pl.col(f"{t}_norm_stderr"), f"{t} (norm.) stderr", hidden=True)
    # complete rows by rank, then the incomplete ones (no average, no rank), as the board
    df = wide.select(cols).sort("rank", nulls_last=True, maintain_order=True)
    names = df.columns
    defs = []
    for t in display:
        for value, se in ((t, f"{t} stderr"), (f"{t} (norm.)", f"{t} (norm.) stderr")):
            defs.append(
                {
                    "targets": [names.index(value)],
                    "render": JavascriptFunction(
                        "function (d, t, row) { return llmboard.pm(d, t, row, "
                        f"{names.index(se)}); }}"
                    ),
                }
            )
    defs += markup.number_columns(df, {"average": 4, "average (norm.)": 4, "parameters (M)": 1})
    hidden = [i for i, m in enumerate(meta) if m["hidden"] or m["mode"] == "norm"]
    defs.append({"targets": hidden, "visible": False})
    # order=[]: the board's own order (DataTables would put empty ranks first)
    html = markup.datatable(df, "leaderboard", page_length=50, order=[], column_defs=defs)
    return html, meta


# ---------------------------------------------------------------- precision
def precision_page(out: Path, data: ReportData) -> dict:
    import polars as pl

    view = data.precision_comparison.select(
        "model",
        "task",
        "precision",
        "reference",
        pl.col("n_docs").alias("docs"),
        pl.col("delta").round(4).alias("Δ"),
        pl.col("delta_stderr").round(4).alias("paired se"),
        pl.col("flip_rate").round(4).alias("flips"),
        pl.col("ref_only_right").alias("ref only"),
        pl.col("other_only_right").alias("other only"),
        pl.col("mcnemar_p").round(4).alias("McNemar p"),
        pl.col("mean_abs_dll").round(4).alias("mean |ΔLL|"),
        pl.col("max_abs_dll").round(4).alias("max |ΔLL|"),
        pl.col("equivalence"),
        pl.col("tost_p").round(4).alias("TOST p"),
    )
    return {
        "csv": layout.REPORT_PRECISION_CSV,
        "has_rows": data.precision_comparison.height > 0,
        "table": markup.datatable(
            view,
            "precision-table",
            page_length=50,
            column_defs=markup.task_links(view, f"{TASK_PAGES}/"),
        ),
        "plots": figures.precision_plot_files(data.models),
    }


# ---------------------------------------------------------------- comparisons
COMPARE_PAIRS = "compare"  # {i}.js: row i's pairs with every later row, loaded on demand
AVERAGE_FIRST = "average"  # the board's average leads the table and the forest plot


def compare_page(out: Path, data: ReportData) -> dict:
    """Pick two rows: every task's paired difference with its interval and p-values,
    and a forest plot (drawn by report.js from the pairs, as text: no markup from data).

    A board of R rows has R(R-1)/2 pairs on every task (300 rows x 61: 2.7 million), too
    many for one page: row i's pairs with each row j > i are a script of their own
    (``compare/{i}.js``), which the page loads when a pair needs it. An entry holds
    diff (row j's value minus row i's), se, p, p adjusted, documents and significance;
    the page draws the interval diff -+ z * se, as the board computed it
    (``statistics.paired_differences``)."""
    import polars as pl

    from ..statistics import normal_quantile

    c = data.comparisons
    if c is None or not c.height:
        return {"has_pairs": False, "meta_json": "{}", "settings": {}}
    names = sorted(
        set(zip(c["model_a"], c["precision_a"])) | set(zip(c["model_b"], c["precision_b"]))
    )
    tests = c.group_by("task").agg(pl.col("test").unique())
    if tests["test"].list.len().max() > 1:  # one test per task (board_statistics)
        raise ValueError("comparisons.parquet: a task compared by two tests")
    tasks = sorted(tests["task"], key=lambda t: (t != AVERAGE_FIRST, t))
    test_of = dict(zip(tests["task"], tests["test"].list.first()))
    index = pl.DataFrame(
        {"m": [n[0] for n in names], "p": [n[1] for n in names], "i": range(len(names))}
    )
    task_index = pl.DataFrame({"task": tasks, "t": range(len(tasks))})
    pairs = (
        c.join(task_index, on="task")
        .join(
            index.rename({"m": "model_a", "p": "precision_a", "i": "ia"}),
            on=["model_a", "precision_a"],
        )
        .join(
            index.rename({"m": "model_b", "p": "precision_b", "i": "ib"}),
            on=["model_b", "precision_b"],
        )
        .select(
            lo=pl.min_horizontal("ia", "ib"),
            hi=pl.max_horizontal("ia", "ib"),
            t="t",
            # stored as (later row) - (earlier row): flip where the board had it the other way
            diff=pl.when(pl.col("ia") < pl.col("ib")).then("diff").otherwise(-pl.col("diff")),
            se="se",
            p="p",
            p_adjusted="p_adjusted",
            n="n",
            sig=pl.col("significant").cast(pl.Int8),
        )
        .sort("lo", "hi", "t")
    )
    # six decimals for the differences (shown with four), four significant digits for p
    entry = pl.concat_str(
        pl.lit("["),
        pl.col("hi"),
        pl.lit(","),
        pl.col("t"),
        pl.lit(","),
        _number(pl.col("diff").round(6)),
        pl.lit(","),
        _number(pl.col("se").round(6)),
        pl.lit(","),
        _number(_significant(pl.col("p"))),
        pl.lit(","),
        _number(_significant(pl.col("p_adjusted"))),
        pl.lit(","),
        pl.col("n"),
        pl.lit(","),
        pl.col("sig"),
        pl.lit("]"),
    )
    folder = out / COMPARE_PAIRS
    folder.mkdir()
    by_row = pairs.group_by("lo").agg(entry.str.join(",").alias("entries"))
    for lo, entries in by_row.iter_rows():
        (folder / f"{lo}.js").write_text(
            f"llmboard.receivePairs({lo},[{entries}]);\n", encoding="utf-8"
        )
    level = float(c["level"][0])
    return {
        "has_pairs": True,
        # script_json escapes "<": a name cannot close the <script> it is embedded in
        "meta_json": markup.script_json(
            {
                "rows": [f"{m} · {p}" for m, p in names],
                "tasks": tasks,
                "tests": [test_of[t] for t in tasks],
                "z": normal_quantile(level),
                "src": f"{COMPARE_PAIRS}/",
            }
        ),
        "settings": {"level": level, "adjust": c["adjust"][0]},
    }


def _significant(x, digits: int = 4):
    """``x`` rounded to ``digits`` significant digits (p-values: shown with three)."""
    import polars as pl

    scale = pl.lit(10.0).pow(digits - 1 - x.abs().log10().floor())
    return pl.when(x == 0).then(0.0).otherwise((x * scale).round(0) / scale)


def _number(x):
    """A float column as JSON numbers (null for a missing value)."""
    import polars as pl

    return pl.when(x.is_finite()).then(x.cast(pl.String)).otherwise(pl.lit("null"))


# ---------------------------------------------------------------- tasks
def tasks_page(out: Path, data: ReportData) -> dict:
    """Every task and group with its best score; and each one's own page."""
    import polars as pl

    (out / layout.REPORT_TASK_TABLES).mkdir(parents=True)
    (out / TASK_PAGES).mkdir()
    prompting = _prompting(data.long)
    for name in sorted(data.tasks):
        task_page(out, data, name, prompting)

    best = (
        data.long.filter(pl.col("primary"))
        .sort("value", descending=True, nulls_last=True)
        .group_by("task", maintain_order=True)
        .agg(pl.col("model").first(), pl.col("precision").first(), pl.col("value").first())
    )
    best_of = {r[0]: r for r in best.iter_rows()}
    rows = []
    for name in sorted(data.tasks):
        t = data.tasks[name]
        b = best_of.get(name)
        rows.append(
            {
                "task": name,
                "kind": t.kind,
                "shots": t.shots,
                "documents": t.n_docs,
                "chance": round(t.chance, 4),
                "primary metric": t.primary_metric,
                "task hash": t.task_hash,
                "runs": len(data.runs_by_task.get(name, [])) or None,
                "best": f"{b[1]} · {b[2]}: {b[3]:.4f}" if b and b[3] is not None else None,
            }
        )
    view = pl.DataFrame(rows)
    return {
        "table": markup.datatable(
            view,
            "tasks-table",
            page_length=100,
            column_defs=markup.task_links(view, f"{TASK_PAGES}/"),
        ),
    }


def _prompting(long) -> str:
    """How the board's prompts were built (every model's, joined), in words."""
    if "prompting" not in long.columns:
        return "raw"
    prompting = ", ".join(sorted({str(x) for x in long["prompting"].drop_nulls().to_list()}))
    return prompting or "raw"


def task_page(out: Path, data: ReportData, name: str, prompting: str) -> None:
    """One task's or group's page: its definition, its scores (also as a CSV table) and,
    for a task, its documents (``write_instances``)."""
    import yaml

    t = data.tasks[name]
    scores = _task_scores(data.long, t)
    scores.write_csv(out / layout.REPORT_TASK_TABLES / f"{name}.csv")
    render_page(
        out,
        data,
        "task.html",
        f"{TASK_PAGES}/{name}.html",
        title=name,
        key="tasks",  # the header marks Tasks
        t=t,
        prompting=prompting,
        table=markup.datatable(scores, "scores-table", page_length=50),
        yaml=yaml.safe_dump(t.spec, sort_keys=False, allow_unicode=True) if t.spec else "",
        instances=write_instances(out, data, name),
        n_runs=len(data.runs_by_task.get(name, [])),
    )


def _task_scores(long, t: collect.TaskInfo):
    """Every model's scores on task ``t`` (every metric, the primary one first)."""
    import polars as pl

    rows = long.filter(pl.col("task") == t.name)
    return rows.select(
        "model",
        "precision",
        (pl.col("prompting") if "prompting" in rows.columns else pl.lit("raw")).alias("prompting"),
        "metric",
        pl.col("value").round(4),
        pl.col("stderr").round(4),
        pl.when(pl.col("primary"))
        .then(collect.normalised(pl.col("value"), t.chance).round(4))
        .alias("normalised"),
        "n",
    ).sort(
        pl.col("metric") != t.primary_metric,
        pl.col("value"),
        descending=[False, True],
        nulls_last=True,
    )


def write_instances(out: Path, data: ReportData, name: str) -> str | None:
    """Task ``name``'s documents and every run's answers (``collect.instances_payload``)
    as a script beside its page, which loads it when opened (a page holding thousands
    of documents would be slow to open); its file name, or None for a group (no
    documents of its own)."""
    ids = data.runs_by_task.get(name)
    if not ids:
        return None
    t = data.tasks[name]
    prompts = collect.task_prompts(t, data.runs[ids[0]])
    payload = collect.instances_payload(t, data.runs, ids, data.answers[name], prompts)
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    file = f"{name}.instances.js"
    (out / TASK_PAGES / file).write_text(f"llmboard.receiveInstances({text});\n", encoding="utf-8")
    return file


# ---------------------------------------------------------------- cost
def cost_page(out: Path, data: ReportData) -> dict:
    import polars as pl

    jobs = data.jobs
    job_view = (
        jobs.select(
            "job",
            "model",
            "precision",
            "shards",
            "tasks",
            "requests",
            "forward_tokens",
            pl.col("wall_s").round(2).alias("wall s"),
            pl.col("load_s").round(2).alias("load s"),
            pl.col("inference_s").round(2).alias("inference s"),
            pl.col("tokens_per_s").round(1).alias("tokens/s"),
            pl.max_horizontal("host_peak_mb", "bench_rss_mb").round(1).alias("peak host MB"),
            pl.col("gpu_peak_mb").round(1).alias("peak GPU MB"),
            "gpus",
        )
        if jobs.height
        else pl.DataFrame({"job": []})
    )
    shard_view = data.shards.select(
        "model",
        "precision",
        "task",
        "shard",
        "requests",
        "forward_tokens",
        pl.col("inference_s").round(3).alias("inference s"),
        (pl.col("forward_tokens") / pl.col("inference_s")).round(1).alias("tokens/s"),
        pl.col("host_peak_mb").alias("peak host MB"),
        pl.col("gpu_peak_mb").alias("peak GPU MB"),
        "gpus",
        "store_hits",
    )
    bench_view = data.benchmarks.select(
        "rule",
        "job",
        pl.col("wall_s").round(2).alias("wall s"),
        pl.col("max_rss_mb").round(1).alias("max RSS MB"),
        pl.col("cpu_s").round(2).alias("cpu s"),
    )
    return {
        "jobs": markup.datatable(job_view, "jobs-table", page_length=25),
        "shards": markup.datatable(
            shard_view,
            "shards-table",
            page_length=25,
            column_defs=markup.task_links(shard_view, f"{TASK_PAGES}/"),
        ),
        "has_bench": data.benchmarks_given,
        "bench": markup.datatable(bench_view, "bench-table", page_length=25),
    }


# ---------------------------------------------------------------- provenance
def provenance_page(out: Path, data: ReportData) -> dict:
    import polars as pl

    ver = data.verification
    rows = []
    for r in data.runs:
        p = r.score["provenance"]
        problems = ver.status.get((r.model, r.precision, r.task))
        status = (
            "not checked" if ver.mode == "off" else ("fail: " + problems[0] if problems else "pass")
        )
        rows.append(
            {
                "model": r.model,
                "precision": r.precision,
                "task": r.task,
                "verify": status,
                "checkpoint sha256": p["checkpoint_sha256"],
                "task hash": p["task_hash"],
                "dataset fingerprint": p["dataset_fingerprint"],
                "llmboard": p.get("llmboard_version"),
                "git commit": p.get("git_commit"),
                "scorer": p.get("scorer_version"),
                "torch": (p.get("libraries") or {}).get("torch"),
                "transformers": (p.get("libraries") or {}).get("transformers"),
                "score file": r.score_file,
            }
        )
    view = pl.DataFrame(rows)
    return {
        "verify_what": ver.what,
        "verify_seconds": ver.seconds,
        "problems": ver.problems,
        "table": markup.datatable(
            view,
            "provenance-table",
            page_length=25,
            column_defs=markup.task_links(view, f"{TASK_PAGES}/")
            + markup.js_columns(view, {"verify": "llmboard.status(d, t)"}),
        ),
    }


# the header's links, in order
PAGES = [
    Page(layout.REPORT_INDEX, "Leaderboard", leaderboard_page),
    Page("precision.html", "Precision", precision_page),
    Page("compare.html", "Compare", compare_page),
    Page("tasks.html", "Tasks", tasks_page),
    Page("cost.html", "Cost", cost_page),
    Page("provenance.html", "Provenance", provenance_page),
]
