"""Build the HTML report from a run's files (``build_report``).

The whole report is written into a temporary sibling of its folder and swapped in
only when complete (``atomic.atomic_dir``): an input that cannot be read fails the
build with an error naming the file, and the previous report stays as it was.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ... import __version__
from ...atomic import atomic_dir
from ...inference.precisions import REFERENCE_ORDER
from ...workflow import layout
from . import collect, figures, pages
from .collect import GENERATE, ReportError

log = logging.getLogger(__name__)
VERIFY_MODES = ("fast", "full", "off")


def _precision_key(p: str) -> tuple:
    return (REFERENCE_ORDER.index(p) if p in REFERENCE_ORDER else len(REFERENCE_ORDER), p)


def _groups_from_tasks_dir(long, tasks_dir) -> dict:
    import polars as pl

    from ...tasks.definitions import find_task_files, group_spec, is_group

    if tasks_dir is None:
        return {}
    index = find_task_files(tasks_dir)
    names = set(long.filter(pl.col("is_group"))["task"].to_list())
    return {n: group_spec(p) for n, p in index.items() if n in names and is_group(p)}


def _display_of(leaderboard: Path, long) -> list[str]:
    """The published board's task columns (its CSV's header), else every top-level task."""
    import polars as pl

    csv = leaderboard.with_suffix(".csv")
    if csv.exists():
        head = pl.read_csv(csv, n_rows=0).columns
        fixed = {"rank", "model", "precision", "average", "prompting"}
        return [c for c in head if c not in fixed and not c.endswith("_stderr")]
    return sorted(set(long.filter(~pl.col("is_group"))["task"].to_list()))


# ---------------------------------------------------------------- verification
def _verify(mode: str, results: Path, tasks_dir, runs) -> dict:
    """``llmboard verify`` in-process; each score passes unless a problem names one of
    its files (score, prediction shards and sidecars, model folder) or its board row."""
    if mode == "off":
        return {"mode": mode, "status": {}, "problems": [], "seconds": 0.0, "what": "not run"}
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
    return {
        "mode": mode,
        "status": status,
        "problems": rep.problems,
        "unattributed": [p for i, p in enumerate(rep.problems) if i not in used],
        "seconds": round(rep.seconds, 2),
        "what": what,
    }


# ---------------------------------------------------------------- instances
def instances_payload(task, runs, ids: list[int], ans, prompts) -> dict:
    """The drill-down of one task: every document with its prompt and choices (or
    targets), and per run its answer, 0/1 and log-likelihoods (or generation)."""
    import polars as pl

    order = sorted(ids, key=lambda i: (runs[i].model, _precision_key(runs[i].precision)))
    pos = {i: k for k, i in enumerate(order)}
    meta = pl.DataFrame(
        {
            "run": order,
            "model": [runs[i].model for i in order],
            "precision": [runs[i].precision for i in order],
        },
        schema={"run": pl.Int32, "model": pl.String, "precision": pl.String},
    )
    a = ans.join(meta, on="run")
    prec_dis = (
        a.group_by("doc_id", "model")
        .agg(d=pl.col("answer").n_unique() > 1)
        .group_by("doc_id")
        .agg(pd=pl.col("d").any())
    )
    model_dis = (
        a.group_by("doc_id", "precision")
        .agg(d=pl.col("answer").n_unique() > 1)
        .group_by("doc_id")
        .agg(md=pl.col("d").any())
    )
    gen = task.kind == GENERATE
    detail = pl.col("generation") if gen else pl.col("ll").list.eval(pl.element().round(4))
    answer = pl.col("answer") if gen else pl.col("pick")
    per_doc = (
        a.sort("doc_id", "run")
        .group_by("doc_id", maintain_order=True)
        .agg(pl.col("run"), answer.alias("answer"), pl.col("correct"), detail.alias("detail"))
        .join(prompts, on="doc_id", how="left")
        .join(prec_dis, on="doc_id", how="left")
        .join(model_dis, on="doc_id", how="left")
        .sort("doc_id")
    )
    if not gen:
        gold = a.group_by("doc_id").agg(pl.col("gold").first())
        per_doc = per_doc.join(gold, on="doc_id", how="left").sort("doc_id")
    n = len(order)
    docs = []
    for r in per_doc.iter_rows(named=True):
        answers, oks, details = [None] * n, [None] * n, [None] * n
        for i, x, ok, d in zip(r["run"], r["answer"], r["correct"], r["detail"]):
            k = pos[i]
            answers[k], oks[k], details[k] = x, ok, d
        if gen:
            prompt, choices, gold = r["context"], list(r["targets"] or []), None
        elif task.kind == "multiple_input":
            prompt, choices, gold = r["continuation"][0], list(r["context"]), r["gold"]
        else:
            prompt, choices, gold = r["context"][0], list(r["continuation"]), r["gold"]
        docs.append(
            [
                r["doc_id"],
                prompt,
                choices,
                gold,
                answers,
                oks,
                details,
                bool(r["pd"]),
                bool(r["md"]),
            ]
        )
    return {
        "task": task.name,
        "kind": task.kind,
        "metric": task.primary_metric,
        "runs": [[runs[i].model, runs[i].precision] for i in order],
        "docs": docs,
    }


def _write_instances(path: Path, payload: dict) -> None:
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    path.write_text(f"llmboard.receiveInstances({text});\n", encoding="utf-8")


# ---------------------------------------------------------------- pages
def _leaderboard_table(wide, display: list[str]) -> tuple[str, list[dict]]:
    import polars as pl
    from itables import JavascriptFunction

    cols, meta = [], []

    def add(expr, name, **m):
        cols.append(expr.alias(name))
        meta.append({"mode": None, "task": None, "rank": False, "hidden": False, **m})

    add(pl.col("rank"), "rank", mode="raw", rank=True)
    add(pl.col("rank_norm"), "rank (norm.)", mode="norm", rank=True)
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
    df = wide.select(cols).sort("rank")
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
    defs += pages.number_columns(df, {"average": 4, "average (norm.)": 4, "parameters (M)": 1})
    hidden = [i for i, m in enumerate(meta) if m["hidden"] or m["mode"] == "norm"]
    defs.append({"targets": hidden, "visible": False})
    html = pages.datatable(df, "leaderboard", page_length=50, order=[[0, "asc"]], column_defs=defs)
    return html, meta


def build_report(
    out_dir,
    leaderboard,
    *,
    agreement=None,
    display: list[str] | None = None,
    groups: dict | None = None,
    workdir=".",
    benchmarks=None,
    tasks_dir=None,
    verify: str = "fast",
    threads: int = 1,
) -> dict:
    """Write the report for the board ``leaderboard`` (a long ``leaderboard.parquet``)
    into ``out_dir``, atomically. Paths the board and score files name are relative to
    ``workdir``; ``verify``: how ``llmboard verify`` checks each score (fast, full or
    off); ``threads``: how many figures are rendered at once. Returns what was built
    (files, bytes, seconds)."""
    import polars as pl
    import yaml

    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, not {verify!r}")
    t0 = time.monotonic()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = round(time.monotonic() - t0 - sum(timings.values()), 3)

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

    by_task: dict[str, list[int]] = {}
    for i, r in enumerate(runs):
        by_task.setdefault(r.task, []).append(i)
    answers = {t: collect.task_answers(tasks[t], runs, ids) for t, ids in by_task.items()}
    collect.chances(tasks, answers, runs)
    lap("read predictions")
    params = collect.model_parameters(runs, workdir)
    wide = collect.wide_board(long, display, tasks, params)
    precision = collect.compare_precisions(answers, runs, agreement_df)
    shards = collect.shard_costs(runs)
    bench = collect.read_benchmarks(Path(benchmarks) if benchmarks else None)
    jobs = collect.inference_jobs(shards, bench)
    lap("compare")
    ver = _verify(verify, leaderboard.parent, tasks_dir, runs)
    lap("verify")

    models = sorted(wide["model"].unique().to_list())
    precisions = sorted(wide["precision"].unique().to_list(), key=_precision_key)
    failing = sum(1 for v in ver["status"].values() if v)
    summary = (
        "not run"
        if verify == "off"
        else (
            f"all {len(runs)} scores pass"
            if not ver["problems"]
            else f"{failing} of {len(runs)} scores fail, {len(ver['problems'])} problems"
        )
    )
    common = {
        "version": __version__,
        "n_scores": len(runs),
        "verify_mode": verify,
        "verify_summary": summary,
    }

    with atomic_dir(out_dir) as out:
        pages.write_assets(out)
        data = out / "data"
        data.mkdir()
        downloads = []
        for src in (
            leaderboard.with_suffix(".csv"),
            leaderboard,
            Path(agreement) if agreement else None,
        ):
            if src is not None and src.exists():
                shutil.copyfile(src, data / src.name)
                downloads.append((f"data/{src.name}", src.name))
        wide.with_columns(pl.col(pl.Float64).round(6)).write_csv(
            out / layout.REPORT_LEADERBOARD_CSV
        )
        downloads.append(
            (layout.REPORT_LEADERBOARD_CSV, "leaderboard with normalised scores (CSV)")
        )
        precision.write_csv(out / layout.REPORT_PRECISION_CSV)
        downloads.append((layout.REPORT_PRECISION_CSV, "precision comparison (CSV)"))
        lap("data files")

        # figures (rendered on ``threads`` threads: vl-convert works outside the GIL)
        heat_dir, plot_dir = out / layout.REPORT_HEATMAPS, out / layout.REPORT_PRECISION_PLOTS
        heat_dir.mkdir(parents=True)
        plot_dir.mkdir(parents=True)
        heatmaps = [(p, f"{layout.REPORT_HEATMAPS}/{p}.svg") for p in precisions]
        plots = [(m, f"{layout.REPORT_PRECISION_PLOTS}/{m}.svg") for m in models]
        work = [(figures.heatmap, p, f) for p, f in heatmaps]
        work += [(figures.precision_plot, m, f) for m, f in plots]
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            svgs = pool.map(lambda w: w[0](wide, display, w[1]), work)
            for (_, _, f), svg in zip(work, svgs):
                (out / f).write_text(svg, encoding="utf-8")
        lap("figures")

        # leaderboard
        table, meta = _leaderboard_table(wide, display)
        pages.render(
            out,
            "index.html",
            layout.REPORT_INDEX,
            {
                **common,
                "title": "Leaderboard",
                "page": "index",
                "n_models": len(models),
                "precisions": precisions,
                "display": display,
                "downloads": downloads,
                "columns_json": json.dumps(meta),
                "table": table,
                "heatmaps": heatmaps,
            },
        )

        # precision
        prec_view = precision.select(
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
        )
        pages.render(
            out,
            "precision.html",
            "precision.html",
            {
                **common,
                "title": "Precision",
                "page": "precision",
                "csv": layout.REPORT_PRECISION_CSV,
                "has_rows": precision.height > 0,
                "table": pages.datatable(
                    prec_view,
                    "precision-table",
                    page_length=50,
                    column_defs=pages.task_links(prec_view, "tasks/"),
                ),
                "plots": plots,
            },
        )
        lap("leaderboard and precision pages")

        # tasks
        prompting = "raw"
        if "prompting" in long.columns:
            prompting = ", ".join(
                sorted({str(x) for x in long["prompting"].drop_nulls().to_list()})
            )
            prompting = prompting or "raw"
        prim = long.filter(pl.col("primary"))
        best = (
            prim.sort("value", descending=True, nulls_last=True)
            .group_by("task", maintain_order=True)
            .agg(pl.col("model").first(), pl.col("precision").first(), pl.col("value").first())
        )
        best_of = {r[0]: r for r in best.iter_rows()}
        task_rows = []
        for name in sorted(tasks):
            t = tasks[name]
            b = best_of.get(name)
            task_rows.append(
                {
                    "task": name,
                    "kind": t.kind,
                    "shots": t.shots,
                    "documents": t.n_docs,
                    "chance": round(t.chance, 4),
                    "primary metric": t.primary_metric,
                    "task hash": t.task_hash,
                    "runs": len(by_task.get(name, [])) or None,
                    "best": f"{b[1]} · {b[2]}: {b[3]:.4f}" if b and b[3] is not None else None,
                }
            )
        pages.render(
            out,
            "tasks.html",
            "tasks.html",
            {
                **common,
                "title": "Tasks",
                "page": "tasks",
                "table": pages.datatable(
                    task_view := pl.DataFrame(task_rows),
                    "tasks-table",
                    page_length=100,
                    column_defs=pages.task_links(task_view, "tasks/"),
                ),
            },
        )
        table_dir = out / layout.REPORT_TASK_TABLES
        table_dir.mkdir(parents=True)
        (out / "tasks").mkdir()
        for name in sorted(tasks):
            t = tasks[name]
            rows = long.filter(pl.col("task") == name)
            view = rows.select(
                "model",
                "precision",
                (pl.col("prompting") if "prompting" in rows.columns else pl.lit("raw")).alias(
                    "prompting"
                ),
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
            view.write_csv(table_dir / f"{name}.csv")
            src = None
            if name in by_task:
                ids = by_task[name]
                prompts = collect.task_prompts(t, runs[ids[0]])
                payload = instances_payload(t, runs, ids, answers[name], prompts)
                _write_instances(out / "tasks" / f"{name}.instances.js", payload)
                src = f"{name}.instances.js"
            pages.render(
                out,
                "task.html",
                f"tasks/{name}.html",
                {
                    **common,
                    "title": name,
                    "page": "tasks",
                    "t": t,
                    "prompting": prompting,
                    "table": pages.datatable(view, "scores-table", page_length=50),
                    "yaml": yaml.safe_dump(t.spec, sort_keys=False, allow_unicode=True)
                    if t.spec
                    else "",
                    "instances": src,
                    "n_runs": len(by_task.get(name, [])),
                },
            )
        lap("task pages")

        # cost
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
        shard_view = shards.select(
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
        bench_view = bench.select(
            "rule",
            "job",
            pl.col("wall_s").round(2).alias("wall s"),
            pl.col("max_rss_mb").round(1).alias("max RSS MB"),
            pl.col("cpu_s").round(2).alias("cpu s"),
        )
        pages.render(
            out,
            "cost.html",
            "cost.html",
            {
                **common,
                "title": "Cost",
                "page": "cost",
                "jobs": pages.datatable(job_view, "jobs-table", page_length=25),
                "shards": pages.datatable(
                    shard_view,
                    "shards-table",
                    page_length=25,
                    column_defs=pages.task_links(shard_view, "tasks/"),
                ),
                "has_bench": benchmarks is not None,
                "bench": pages.datatable(bench_view, "bench-table", page_length=25),
            },
        )

        # provenance
        prov_rows = []
        for r in runs:
            p = r.score["provenance"]
            problems = ver["status"].get((r.model, r.precision, r.task))
            status = (
                "not checked"
                if verify == "off"
                else ("fail: " + problems[0] if problems else "pass")
            )
            prov_rows.append(
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
        pages.render(
            out,
            "provenance.html",
            "provenance.html",
            {
                **common,
                "title": "Provenance",
                "page": "provenance",
                "verify_what": ver["what"],
                "verify_seconds": ver["seconds"],
                "problems": ver["problems"],
                "table": pages.datatable(
                    prov_view := pl.DataFrame(prov_rows),
                    "provenance-table",
                    page_length=25,
                    column_defs=pages.task_links(prov_view, "tasks/")
                    + pages.js_columns(prov_view, {"verify": "llmboard.status(d, t)"}),
                ),
            },
        )
        lap("cost and provenance pages")
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        n_files = sum(1 for f in out.rglob("*") if f.is_file())
    seconds = round(time.monotonic() - t0, 2)
    log.info(
        "report: %d scores, %d files, %.1f MB in %.1f s (%s)",
        len(runs),
        n_files,
        size / 2**20,
        seconds,
        timings,
    )
    return {
        "scores": len(runs),
        "files": n_files,
        "bytes": size,
        "seconds": seconds,
        "timings": timings,
        "verify_problems": len(ver["problems"]),
    }


def publish_report(staging, folder) -> None:
    """Copy a built report (``staging``) to ``folder`` whole: the copy is made beside
    ``folder`` and swapped in, so the folder always holds one complete report."""
    with atomic_dir(folder) as tmp:
        shutil.copytree(staging, tmp, dirs_exist_ok=True)
