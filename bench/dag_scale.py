"""Benchmark: Snakemake's DAG for a 15,000-inference-job leaderboard, and a no-op rerun.

Generates a workspace with 100 stand-in models (tiny local files, never loaded),
50 tasks (YAML + a 2-row jsonl each) and 3 precisions: 15,000 inference jobs and
15,000 score jobs. Prints the dry-run's wall time and peak memory (fresh workspace,
every job planned). With --noop-workspace, times a rerun of a finished workspace.

    .venv/bin/python bench/dag_scale.py [--models 100 --tasks 50]
    .venv/bin/python bench/dag_scale.py --noop-workspace .   # time a no-op rerun of a workspace
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def timed(cmd, cwd=None) -> tuple[float, float, str]:
    """(wall s, peak RSS MiB of the child, last line of output)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if out.returncode != 0:
        raise SystemExit(out.stdout[-3000:] + out.stderr[-3000:])
    lines = [l for l in (out.stdout + out.stderr).splitlines() if l.strip()]
    return wall, max(peak, before) / 1024, lines[-1] if lines else ""


def make_workspace(root: Path, n_models: int, n_tasks: int) -> Path:
    tasks = root / "tasks"
    tasks.mkdir(parents=True)
    for i in range(n_tasks):
        (tasks / f"t{i}.jsonl").write_text('{"q": "a", "o": ["x", "y"], "g": 0}\n' * 2)
        (tasks / f"t{i}.yaml").write_text(
            f"task: t{i}\ndataset: {{source: t{i}.jsonl}}\ndoc_to_text: q\n"
            f"doc_to_choice: o\ndoc_to_target: g\n")
    models = root / "models"
    models.mkdir()
    cfg = {"models": {}, "precisions": ["fp32", "bf16", "int8"],
           "tasks": {f"t{i}": {"limit": 2} for i in range(n_tasks)}, "tasks_dir": str(tasks)}
    for m in range(n_models):
        (models / f"m{m}.safetensors").write_bytes(b"stand-in")
        cfg["models"][f"m{m}"] = {"source": str(models / f"m{m}.safetensors")}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--tasks", type=int, default=50)
    ap.add_argument("--noop-workspace", help="time `snakemake --cores 2` in this (finished) workspace")
    args = ap.parse_args()
    if args.noop_workspace:
        wall, peak, last = timed([SNAKEMAKE, "--cores", "2"], cwd=args.noop_workspace)
        print(f"no-op rerun of {args.noop_workspace}: {wall:.2f} s, peak {peak:.0f} MiB ({last})")
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = make_workspace(Path(tmp), args.models, args.tasks)
        n = args.models * args.tasks * 3
        base = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(root),
                "--configfile", str(root / "config.yaml"), "--cores", "2"]
        wall, peak, last = timed(base + ["--dry-run", "--quiet", "rules"])
        print(f"{n:,} inference + {n:,} score jobs, fresh workspace dry-run: {wall:.2f} s, "
              f"peak {peak:.0f} MiB")
        per_job = wall / (2 * n) * 1000
        print(f"  = {per_job:.2f} ms per job (Snakemake's own DAG work dominates; see README)")


if __name__ == "__main__":
    main()
