"""``llmboard`` command line: ``memory`` (memory plans), ``jobs`` (what a run would
compute) and ``verify`` (provenance checks)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .checkpoints.sources import SourceError
from .inference.memory_plan import JOB_MARGIN, PlanDoesNotFit
from .inference.precisions import PRECISIONS
from .settings import SettingsError
from .tasks.errors import TaskError

GiB = 1024**3
USER_ERRORS = (SettingsError, TaskError, SourceError, PlanDoesNotFit)


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


def cmd_verify(args) -> int:
    from .results.verify import score_files, verify

    results = Path(args.results)
    problems = verify(results, Path(args.tasks_dir) if args.tasks_dir else None)
    for p in problems:
        print(p)
    n = len(score_files(results))
    print(f"verified {n} score file(s): {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


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
    v = sub.add_parser("verify", help="re-check every score's provenance against files on disk")
    v.add_argument("results", nargs="?", default="results")
    v.add_argument("--tasks-dir", default="tasks")
    v.set_defaults(fn=cmd_verify)
    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except USER_ERRORS as e:  # a user's mistake: the message names the file and field
        print(f"llmboard {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
