"""Benchmark: Snakemake's DAG for a 15,000-prediction leaderboard, and a no-op rerun.

Generates a workspace with 100 stand-in models (tiny local files, never loaded),
50 tasks (YAML + a 2-row jsonl each) and 3 precisions: 15,000 model x task x
precision predictions and scores to plan. Prints the dry-run's wall time and peak
memory (fresh workspace, everything planned), and, for scale, the same for a bare
Snakefile with one job per prediction (the one-job-per-task layout's floor). Then
fills in every result with stand-in files, adds one model, and times that dry-run
(the weekly case).
With --noop-workspace, times a rerun of a finished workspace.

    .venv/bin/python -m bench.dag_scale [--models 100 --tasks 50]
    .venv/bin/python -m bench.dag_scale --noop-workspace .   # time a no-op rerun of a workspace
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def timed(cmd, cwd=None) -> tuple[float, float, str]:
    """(wall s, peak RSS MiB of the child, its output)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if out.returncode != 0:
        raise SystemExit(out.stdout[-3000:] + out.stderr[-3000:])
    return wall, max(peak, before) / 1024, out.stdout + out.stderr


def make_workspace(root: Path, n_models: int, n_tasks: int) -> Path:
    tasks = root / "tasks"
    tasks.mkdir(parents=True)
    for i in range(n_tasks):
        (tasks / f"t{i}.jsonl").write_text('{"q": "a", "o": ["x", "y"], "g": 0}\n' * 2)
        (tasks / f"t{i}.yaml").write_text(
            f"task: t{i}\ndataset: {{source: t{i}.jsonl}}\ndoc_to_text: q\n"
            f"doc_to_choice: o\ndoc_to_target: g\n"
        )
    models = root / "models"
    models.mkdir()
    cfg = {
        "models": {},
        "precisions": ["fp32", "bf16", "int8"],
        "tasks": {f"t{i}": {"limit": 2} for i in range(n_tasks)},
        "tasks_dir": str(tasks),
    }
    for m in range(n_models):
        (models / f"m{m}.safetensors").write_bytes(b"stand-in")
        cfg["models"][f"m{m}"] = {"source": str(models / f"m{m}.safetensors")}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--tasks", type=int, default=50)
    ap.add_argument(
        "--noop-workspace", help="time `snakemake --cores 2` in this (finished) workspace"
    )
    args = ap.parse_args()
    if args.noop_workspace:
        wall, peak, out = timed([SNAKEMAKE, "--cores", "2"], cwd=args.noop_workspace)
        last = [line for line in out.splitlines() if line.strip()][-1]
        print(f"no-op rerun of {args.noop_workspace}: {wall:.2f} s, peak {peak:.0f} MiB ({last})")
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = make_workspace(Path(tmp), args.models, args.tasks)
        n = args.models * args.tasks * 3
        base = [
            SNAKEMAKE,
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(root),
            "--configfile",
            str(root / "config.yaml"),
            "--cores",
            "2",
        ]
        wall, peak, out = timed(base + ["--dry-run", "--quiet", "rules"])
        jobs = re.search(r"^total\s+(\d+)", out, re.M).group(1)
        print(
            f"{n:,} predictions + {n:,} scores to plan, fresh workspace dry-run: {wall:.2f} s, "
            f"peak {peak:.0f} MiB, {jobs} jobs"
        )
        floor = bare_snakefile(Path(tmp) / "bare", args.models, args.tasks)
        wall_b, peak_b, out = timed(
            [
                SNAKEMAKE,
                "-s",
                str(floor),
                "--directory",
                str(floor.parent),
                "--cores",
                "2",
                "--dry-run",
                "--quiet",
                "rules",
            ]
        )
        jobs_b = re.search(r"^total\s+(\d+)", out, re.M).group(1)
        print(
            f"for scale: a bare Snakefile with one job per prediction (no functions, no "
            f"scoring): {wall_b:.2f} s, peak {peak_b:.0f} MiB, {jobs_b} jobs "
            f"(x{wall_b / wall:.1f} llmboard's time)"
        )

        # a week later: everything computed (stand-in files), one model added
        cfg = yaml.safe_load((root / "config.yaml").read_text())
        fill_results(root, cfg)
        (root / "models" / "new.safetensors").write_bytes(b"stand-in")
        cfg["models"]["new"] = {"source": str(root / "models" / "new.safetensors")}
        (root / "config.yaml").write_text(yaml.safe_dump(cfg))
        wall, peak, out = timed(base + ["--dry-run", "--quiet", "rules"])
        counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
        print(
            f"finished {n:,}-prediction workspace, one model added: dry-run {wall:.2f} s, "
            f"jobs {counts}"
        )


def fill_results(root: Path, cfg: dict) -> None:
    """Stand-in files for every checkpoint, model, prediction and score of ``cfg``."""
    from llmboard.settings import load_settings
    from llmboard.workflow.plan import build_plan

    plan = build_plan(load_settings(cfg), cfg["tasks_dir"], root=root)
    for m in plan.models:
        for d in (plan.checkpoint_dir(m), plan.model_dir(m)):
            (root / d).mkdir(parents=True, exist_ok=True)
    for kind in ("parquet", "json", "score"):
        for m, p in plan.runs():
            for t in plan.tasks:
                files = (
                    [plan.score_file(m, p, t)]
                    if kind == "score"
                    else plan.prediction_files(m, p, t, kind)
                )
                for f in files:
                    (root / f).parent.mkdir(parents=True, exist_ok=True)
                    (root / f).write_bytes(b"")


def bare_snakefile(root: Path, n_models: int, n_tasks: int) -> Path:
    """The least Snakemake can do with one job per model x task x precision."""
    root.mkdir(parents=True)
    (root / "s.py").write_text("pass\n")
    (root / "Snakefile").write_text(f"""
M = [f"m{{i}}" for i in range({n_models})]
T = [f"t{{i}}" for i in range({n_tasks})]
rule all:
    input: expand("out/{{m}}/{{p}}/{{t}}.txt", m=M, p=["fp32", "bf16", "int8"], t=T)
rule infer:
    input: "in/{{m}}.txt"
    output: "out/{{m}}/{{p}}/{{t}}.txt"
    log: "logs/{{m}}/{{p}}/{{t}}.log"
    script: "s.py"
rule fetch:
    output: "in/{{m}}.txt"
    script: "s.py"
""")
    return root / "Snakefile"


if __name__ == "__main__":
    main()
