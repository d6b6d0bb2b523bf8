"""``llmboard`` command line: ``memory`` (memory plans), ``jobs`` (what a run would
compute), ``store`` (the request store) and ``verify`` (provenance checks)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import USER_ERRORS
from .inference.memory_plan import JOB_MARGIN
from .inference.precisions import PRECISIONS

GiB = 1024**3


def _plan_rows(args) -> list:
    from .inference.memory_plan import plan_memory
    from .settings import schema_default, settings_from_file, tasks_dir
    from .workflow.plan import build_plan

    if args.config_json:
        budget = args.token_budget or schema_default("inference", "token_budget")
        return [
            plan_memory(
                args.config_json,
                p,
                model=Path(args.config_json).stem,
                token_budget=budget,
                gpu_memory_gb=args.gpu_memory_gb,
                margin=args.margin,
            )
            for p in args.precisions or list(PRECISIONS)
        ]
    settings = settings_from_file(args.config)
    gpu_gb = args.gpu_memory_gb or settings.resources.gpu_memory_gb
    budget = args.token_budget or settings.inference.token_budget
    wf = build_plan(settings, tasks_dir(settings, Path(args.config).parent))
    rows = []
    for model in sorted(wf.models):
        model_dir = Path(args.workdir) / wf.model_dir(model)
        ckpt = Path(args.workdir) / wf.checkpoint_dir(model)
        source = (
            model_dir
            if (model_dir / "manifest.json").exists()
            else (ckpt / "config.json" if (ckpt / "config.json").exists() else None)
        )
        for p in args.precisions or wf.models[model].precisions:
            if source is None:
                rows.append(
                    {
                        "model": model,
                        "precision": p,
                        "arithmetic": "unknown: fetch it first, or pass --config-json",
                    }
                )
                continue
            rows.append(
                plan_memory(
                    source,
                    p,
                    model=model,
                    token_budget=budget,
                    gpu_memory_gb=gpu_gb,
                    margin=args.margin,
                )
            )
    return rows


def cmd_plan(args) -> int:
    rows = _plan_rows(args)
    print(
        f"{'model':<28} {'precision':<9} {'params':>14} {'weights GiB':>11} {'total GiB':>9} "
        f"{'GPUs':>4} {'host MiB':>9}"
    )
    for r in rows:
        if isinstance(r, dict):
            print(f"{r['model']:<28} {r['precision']:<9} {r['arithmetic']}")
            continue
        print(
            f"{r.model:<28} {r.precision:<9} {r.parameters:>14,} {r.weight_bytes / GiB:>11.2f} "
            f"{r.total_bytes / GiB:>9.2f} {r.gpus if r.gpu_memory_gb else '-':>4} {r.host_mem_mb:>9,}"
        )
    if args.explain:
        print()
        for r in rows:
            if not isinstance(r, dict):
                print(f"{r.model} {r.precision}: {r.arithmetic}")
    return 0


def cmd_jobs(args) -> int:
    """The inference and score jobs a run would start, with the task shards each computes
    (Snakemake's dry-run names them by receipt only)."""
    from .settings import settings_from_file, tasks_dir
    from .workflow.plan import build_plan

    settings = settings_from_file(args.config)
    wf = build_plan(settings, tasks_dir(settings, Path(args.config).parent), root=args.workdir)
    rows = [
        ("infer", b, [f"{t}[{i}/{n}]" if n > 1 else t for t, i, n in b.items])
        for b in wf.infer_jobs.values()
    ]
    rows += [("score", b, list(b.items)) for b in wf.score_jobs.values()]
    for kind, b, items in rows:
        print(f"{kind:<6} {b.model:<28} {b.precision:<6} {b.part:<6} {b.id}  {' '.join(items)}")
    print(f"{len(wf.infer_jobs)} inference job(s), {len(wf.score_jobs)} score job(s)")
    return 0


def cmd_store(args) -> int:
    """What the request store holds per checkpoint; with --prune, remove the answers of
    checkpoints no model of the config has (any more)."""
    import json

    from .inference.request_store import prune, survey
    from .settings import settings_from_file, tasks_dir
    from .workflow.plan import build_plan

    settings = settings_from_file(args.config)
    folder = Path(args.workdir) / (settings.request_store or "")
    if settings.request_store is None:
        print("request store: turned off (request_store.enabled: false)")
    wf = build_plan(settings, tasks_dir(settings, Path(args.config).parent), root=args.workdir)
    configured = {}  # checkpoint sha256 -> model names (from converted models' manifests)
    unknown = []  # configured models not converted yet: their checkpoint is not known
    for m in wf.models:
        manifest = Path(args.workdir) / wf.model_dir(m) / "manifest.json"
        if manifest.exists():
            sha = json.loads(manifest.read_text())["checkpoint_sha256"]
            configured.setdefault(sha, []).append(m)
        else:
            unknown.append(m)
    held = survey(folder)
    for sha, r in held.items():
        who = ", ".join(configured.get(sha, [])) or "not in the config"
        print(
            f"{sha[:16]}  {r.entries:>9,} answers  {r.segments:>5} segments  "
            f"{r.bytes / 2**20:>8.1f} MiB  {who}"
        )
        for c in r.corrupt:
            print(f"  corrupt (ignored): {c}")
    total = sum(r.bytes for r in held.values())
    print(
        f"{folder}: {sum(r.entries for r in held.values()):,} answers, "
        f"{total / 2**20:.1f} MiB, {len(held)} checkpoint(s)"
    )
    if args.prune and unknown:
        print(
            f"not pruning: {', '.join(unknown)} not converted yet, so their checkpoints are "
            "not known (run snakemake first)",
            file=sys.stderr,
        )
        return 1
    if args.prune:
        for p in prune(folder, set(configured)):
            print(f"removed {p}")
    return 0


def cmd_verify(args) -> int:
    from .results.verify import verify

    r = verify(
        Path(args.results),
        Path(args.tasks_dir) if args.tasks_dir else None,
        fast=args.fast,
        everything=args.all,
    )
    for p in r.problems:
        print(p)
    mode = "sizes and hashes" if args.fast else "full chain"
    print(
        f"verified ({mode}) {r.scores} score file(s), {r.prediction_files} prediction "
        f"file(s), {r.models} model(s), {r.board_rows} leaderboard row(s) in "
        f"{r.seconds:.1f} s: {'OK' if not r.problems else f'{len(r.problems)} problem(s)'}"
    )
    return 1 if r.problems else 0


def _row(spec: str, known: list[tuple[str, str]]) -> tuple[str, str]:
    """``model`` or ``model:precision`` -> the board row it names (one precision: itself)."""
    from .results.board_statistics import StatisticsError

    model, _, precision = spec.partition(":")
    found = [r for r in known if r[0] == model and (not precision or r[1] == precision)]
    if len(found) != 1:
        rows = ", ".join(f"{m}:{p}" for m, p in known)
        why = "no such row" if not found else "several precisions: name one"
        raise StatisticsError(f"compare: {spec!r}: {why}; the board's ranked rows: {rows}")
    return found[0]


def cmd_compare(args) -> int:
    """Every task's paired difference between two rows of the published board."""
    import polars as pl

    from .results.board_statistics import StatisticsError
    from .workflow import layout

    path = Path(args.results) / (
        Path(layout.fill(layout.PUBLISHED, table=layout.COMPARISONS_TABLE)).name + ".parquet"
    )
    if not path.exists():
        raise StatisticsError(f"{path}: no comparisons (run the workflow first)")
    c = pl.read_parquet(path)
    known = sorted(
        set(zip(c["model_a"], c["precision_a"])) | set(zip(c["model_b"], c["precision_b"]))
    )
    a, b = _row(args.a, known), _row(args.b, known)
    if a == b:
        raise StatisticsError(f"compare: {args.a!r} and {args.b!r} are the same row")
    fwd = c.filter((pl.col("model_a") == a[0]) & (pl.col("precision_a") == a[1]))
    fwd = fwd.filter((pl.col("model_b") == b[0]) & (pl.col("precision_b") == b[1]))
    rev = c.filter((pl.col("model_a") == b[0]) & (pl.col("precision_a") == b[1]))
    rev = rev.filter((pl.col("model_b") == a[0]) & (pl.col("precision_b") == a[1]))
    # stored once per pair as b - a: the other order flips the sign and the interval
    rev = rev.with_columns(
        diff=-pl.col("diff"), ci_low=-pl.col("ci_high"), ci_high=-pl.col("ci_low")
    )
    rows = pl.concat([fwd, rev]).with_columns(first=pl.col("task") != "average")
    print(f"{b[0]} · {b[1]}  minus  {a[0]} · {a[1]}  (paired, on the documents both scored)")
    print(f"{'task':32} {'diff':>8} {'95 % interval':>20} {'p':>9} {'p adj':>9}  test")
    for r in rows.sort("first", "task").iter_rows(named=True):
        star = "*" if r["significant"] else " "
        print(
            f"{r['task']:32} {r['diff']:+8.4f}{star} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] "
            f"{r['p']:9.3g} {r['p_adjusted']:9.3g}  {r['test']}"
        )
    adjust = c["adjust"][0] if c.height else "holm"
    print(f"* significant after the board's {adjust} adjustment")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="llmboard")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("memory", aliases=["plan"], help="memory plan per model and precision")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--workdir", default=".", help="where resources/ lives")
    p.add_argument(
        "--config-json", help="plan from a model's config.json alone (nothing downloaded)"
    )
    p.add_argument("--precisions", nargs="+")
    p.add_argument("--gpu-memory-gb", type=float)
    p.add_argument("--token-budget", type=int, default=None)
    p.add_argument(
        "--margin",
        type=float,
        default=JOB_MARGIN,
        help="on top of the activation estimate (jobs plan with this default)",
    )
    p.add_argument("--explain", action="store_true", help="print the arithmetic")
    p.set_defaults(fn=cmd_plan)
    j = sub.add_parser(
        "jobs", help="the inference and score jobs a run would start, and their tasks"
    )
    j.add_argument("--config", default="config.yaml")
    j.add_argument("--workdir", default=".", help="where results/ lives")
    j.set_defaults(fn=cmd_jobs)
    st = sub.add_parser("store", help="what the request store holds; --prune old checkpoints")
    st.add_argument("--config", default="config.yaml")
    st.add_argument("--workdir", default=".", help="where the run's folder is")
    st.add_argument(
        "--prune",
        action="store_true",
        help="remove the answers of checkpoints no configured model has",
    )
    st.set_defaults(fn=cmd_store)
    v = sub.add_parser("verify", help="prove every published number from the files on disk")
    v.add_argument("results", nargs="?", default="results")
    v.add_argument("--tasks-dir", default="tasks")
    v.add_argument(
        "--fast",
        action="store_true",
        help="sizes and hashes only: recompute no score, re-hash no weights",
    )
    v.add_argument(
        "--all",
        action="store_true",
        help="every score file and board on disk, not only the published board's",
    )
    v.set_defaults(fn=cmd_verify)
    c = sub.add_parser("compare", help="two rows of the board, task by task, paired")
    c.add_argument("a", help="model or model:precision")
    c.add_argument("b", help="model or model:precision")
    c.add_argument("--results", default="results")
    c.set_defaults(fn=cmd_compare)
    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except USER_ERRORS as e:  # a user's mistake: the message names the file and field
        print(f"llmboard {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
