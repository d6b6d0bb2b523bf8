"""``llmboard`` command line: ``plan`` (memory plans), ``jobs`` (what a run would compute)
and ``verify`` (provenance checks)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

GiB = 1024**3


def _plan_rows(args) -> list[dict]:
    from .memplan import plan
    from .workflow import build_plan

    rows = []
    if args.config_json:
        for p in args.precisions or ["fp32", "bf16", "fp16", "int8", "nf4"]:
            rows.append(plan(args.config_json, p, model=Path(args.config_json).stem,
                             token_budget=args.token_budget, gpu_memory_gb=args.gpu_memory_gb,
                             margin=args.margin))
        return rows
    config = yaml.safe_load(Path(args.config).read_text())
    gpu_gb = args.gpu_memory_gb or (config.get("resources") or {}).get("gpu_memory_gb")
    budget = args.token_budget or int((config.get("inference") or {}).get("token_budget", 2048))
    wf = build_plan(config, Path(args.config).parent / config.get("tasks_dir", "tasks"))
    for model in sorted(wf.models):
        model_dir = Path(args.workdir) / wf.model_dir(model)
        ckpt = Path(args.workdir) / wf.checkpoint_dir(model)
        source = model_dir if (model_dir / "manifest.json").exists() else \
            (ckpt / "config.json" if (ckpt / "config.json").exists() else None)
        for p in args.precisions or wf.precisions[model]:
            if source is None:
                rows.append({"model": model, "precision": p,
                             "arithmetic": "unknown: fetch it first, or pass --config-json"})
                continue
            rows.append(plan(source, p, model=model, token_budget=budget, gpu_memory_gb=gpu_gb,
                             margin=args.margin))
    return rows


def cmd_plan(args) -> int:
    rows = _plan_rows(args)
    print(f"{'model':<28} {'precision':<9} {'params':>14} {'weights GiB':>11} {'total GiB':>9} "
          f"{'GPUs':>4} {'host MiB':>9}")
    for r in rows:
        if isinstance(r, dict):
            print(f"{r['model']:<28} {r['precision']:<9} {r['arithmetic']}")
            continue
        print(f"{r.model:<28} {r.precision:<9} {r.parameters:>14,} {r.weight_bytes / GiB:>11.2f} "
              f"{r.total_bytes / GiB:>9.2f} {r.gpus if r.gpu_memory_gb else '-':>4} {r.host_mem_mb:>9,}")
    if args.explain:
        print()
        for r in rows:
            if not isinstance(r, dict):
                print(f"{r.model} {r.precision}: {r.arithmetic}")
    return 0


def cmd_jobs(args) -> int:
    """The inference and score jobs a run would start, with the task shards each computes
    (Snakemake's dry-run names them by receipt only)."""
    from .workflow import build_plan

    config = yaml.safe_load(Path(args.config).read_text())
    wf = build_plan(config, Path(args.config).parent / config.get("tasks_dir", "tasks"), root=args.workdir)
    rows = [("infer", b, [f"{t}[{i}/{n}]" if n > 1 else t for t, i, n in b.items])
            for b in wf.infer_jobs.values()]
    rows += [("score", b, list(b.items)) for b in wf.score_jobs.values()]
    for kind, b, items in rows:
        print(f"{kind:<6} {b.model:<28} {b.precision:<6} {b.part:<6} {b.id}  {' '.join(items)}")
    print(f"{len(wf.infer_jobs)} inference job(s), {len(wf.score_jobs)} score job(s)")
    return 0


def score_files(results: Path) -> list[Path]:
    # (a job's receipt under _jobs/ is not a score)
    return sorted(p for p in (results / "scores").rglob("*.json") if p.parent.name != "_jobs")


def verify(results: Path, tasks_dir: Path | None = None) -> list[str]:
    """Re-check every score's provenance against the files on disk; return the problems."""
    from .hashing import sha256_file
    from .manifest import checkpoint_sha256
    from .tasks import Task, dataset_fingerprint, find_task_files, load_docs, load_task

    problems = []
    scores = score_files(results)
    if not scores:
        return [f"{results}/scores: no score files"]
    index = find_task_files(tasks_dir) if tasks_dir is not None else {}
    weights: dict[Path, str] = {}  # model folder -> checkpoint sha256 as the files are now
    fingerprints: dict[tuple, str] = {}  # (task file, task hash) -> dataset fingerprint now
    for sp in scores:
        s = json.loads(sp.read_text())
        prov = s["provenance"]
        # scores/{model}/{key}/{precision}/{task}/{hash}-{scorer}.json <- predictions/.../{task}/{hash}/
        pred_dir = (results / "predictions" / sp.parent.relative_to(results / "scores")
                    / prov["task_hash"])
        infos = sorted(pred_dir.glob("*.json"))
        if not infos:
            problems.append(f"{sp}: predictions missing ({pred_dir})")
            continue
        info = json.loads(infos[0].read_text())
        model_dir = results.parent / info["model_dir"]  # an absolute model_dir stays as it is
        manifest = model_dir / "manifest.json"
        if not manifest.exists():
            problems.append(f"{sp}: model folder {model_dir} missing")
        else:
            if model_dir not in weights:
                files = json.loads(manifest.read_text())["files"]
                weights[model_dir] = checkpoint_sha256(
                    {f: sha256_file(model_dir / f) for f in files if (model_dir / f).exists()})
            if weights[model_dir] != prov["checkpoint_sha256"]:
                problems.append(f"{sp}: stale: checkpoint sha256 is now {weights[model_dir]}, "
                                f"scored with {prov['checkpoint_sha256']}")
        task_file = index.get(info["task"])
        task = Task(info["task"], info["task_definition"], task_file or Path("."))
        if task.hash != prov["task_hash"]:
            problems.append(f"{sp}: task definition in predictions hashes to {task.hash}, "
                            f"score says {prov['task_hash']}")
        if task_file is not None:
            overrides = {k: info["task_definition"].get(k) for k in ("limit", "fewshot")}
            current = load_task(task_file, overrides)
            if current.hash != prov["task_hash"]:
                problems.append(f"{sp}: stale: {task_file} now hashes to {current.hash}, "
                                f"scored with {prov['task_hash']}")
        key = (task_file, task.hash)
        try:
            if key not in fingerprints:
                fingerprints[key] = dataset_fingerprint(load_docs(task))
            if fingerprints[key] != prov["dataset_fingerprint"]:
                problems.append(f"{sp}: stale: dataset fingerprint is now {fingerprints[key]}, "
                                f"scored with {prov['dataset_fingerprint']}")
        except Exception as e:  # a dataset that cannot be read any more is a finding too
            problems.append(f"{sp}: dataset not readable: {e}")
    return problems


def cmd_verify(args) -> int:
    problems = verify(Path(args.results), Path(args.tasks_dir) if args.tasks_dir else None)
    for p in problems:
        print(p)
    n = len(score_files(Path(args.results)))
    print(f"verified {n} score file(s): {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="llmboard")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan", help="memory plan per model and precision")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--workdir", default=".", help="where resources/ lives")
    p.add_argument("--config-json", help="plan from a model's config.json alone (nothing downloaded)")
    p.add_argument("--precisions", nargs="+")
    p.add_argument("--gpu-memory-gb", type=float)
    p.add_argument("--token-budget", type=int, default=None)
    p.add_argument("--margin", type=float, default=0.10)
    p.add_argument("--explain", action="store_true", help="print the arithmetic")
    p.set_defaults(fn=cmd_plan)
    j = sub.add_parser("jobs", help="the inference and score jobs a run would start, and their tasks")
    j.add_argument("--config", default="config.yaml")
    j.add_argument("--workdir", default=".", help="where results/ lives")
    j.set_defaults(fn=cmd_jobs)
    v = sub.add_parser("verify", help="re-check every score's provenance against files on disk")
    v.add_argument("results", nargs="?", default="results")
    v.add_argument("--tasks-dir", default="tasks")
    v.set_defaults(fn=cmd_verify)
    args = ap.parse_args(argv)
    if args.cmd == "plan" and args.config_json and args.token_budget is None:
        args.token_budget = 2048
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
