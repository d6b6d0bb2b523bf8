"""The workflow through a real one-node Slurm (tools/local-slurm/start.sh), unchanged.

Checks: same leaderboard numbers as a local run; inference jobs asked SLURM for GPUs
(sacct AllocTRES shows gres/gpu); a cancelled job is finished by a rerun without
recomputing what had finished.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import polars as pl
import pytest

from conftest import REPO, missing_service, save_tiny, source_key
from test_workflow import _make_tasks
from workspace import Workspace

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _slurm_up() -> str | None:
    if not shutil.which("sbatch") or not shutil.which("sacct"):
        return "Slurm is not installed (run tools/local-slurm/start.sh as root)"
    if subprocess.run(["scontrol", "ping"], capture_output=True).returncode != 0:
        return "no Slurm controller answers (run tools/local-slurm/start.sh as root)"
    if (
        subprocess.run(["sacct", "-n", "-X", "-S", "now-1minutes"], capture_output=True).returncode
        != 0
    ):
        return "sacct fails: Slurm accounting (slurmdbd) is not running"
    return None


@pytest.fixture(scope="module")
def slurm():
    reason = _slurm_up()
    if reason:
        missing_service(reason)


SLURM_ARGS = (
    "--profile",
    str(REPO / "profiles" / "slurm"),
    "--jobs",
    "4",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--default-resources",
    "slurm_partition=debug",
    "slurm_account=test",
    "mem_mb=1000",
    "runtime=10",
    # two inference jobs per allocation (the node has two fake GPUs)
    "--group-components",
    "inference=2",
)


def _config(ws):
    return {
        "models": {"tiny-llama": {"source": str(ws.models["llama"])}},
        "precisions": ["fp32"],
        "tasks": {"add": {"shards": 3}, "grp": None},
        "tasks_dir": str(ws.tasks),
        "inference": {"token_budget": 512, "threads": 1, "default_mem_mb": 1500},
        # plan GPU jobs: each inference job asks SLURM for --gpus (fake GPUs here)
        "resources": {"gpu_memory_gb": 80, "infer_runtime_min": 10, "convert_mem_mb": 1500},
    }


def _values(path):
    return (
        pl.read_parquet(path)
        .select("model", "precision", "task", "metric", "value", "stderr", "n")
        .sort("model", "precision", "task", "metric")
    )


def test_workflow_on_real_slurm(slurm, tmp_path, tokenizer_dir):
    root = tmp_path
    model = save_tiny("llama", root / "src-llama", tokenizer_dir)
    tasks = _make_tasks(root)

    # reference: the same config run locally (GPU planning off: this machine has none)
    local = Workspace(root / "local")
    local.models, local.tasks = {"llama": model}, tasks
    cfg_local = _config(local)
    cfg_local["resources"] = {"infer_runtime_min": 10}
    local.write_config(cfg_local)
    local.snakemake()

    ws = Workspace(root / "slurm")
    ws.models, ws.tasks = {"llama": model}, tasks
    ws.write_config(_config(ws))
    start = time.strftime("%Y-%m-%dT%H:%M:%S")
    t0 = time.monotonic()
    ws.snakemake(*SLURM_ARGS, timeout=900)
    wall = time.monotonic() - t0
    assert _values(ws.wd / "results/leaderboard.parquet").equals(
        _values(local.wd / "results/leaderboard.parquet")
    )

    # GPU jobs were submitted with --gpus: sacct's AllocTRES holds gres/gpu
    acct = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-S", start, "--format=JobID,AllocTRES,Elapsed,SubmitLine"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    rows = [line.split("|", 3) for line in acct if str(ws.wd) in line]
    infer_rows = [
        r for r in rows if "--comment rule_infer" in r[3] or "--comment rule_inference" in r[3]
    ]
    other_rows = [r for r in rows if r not in infer_rows]
    assert infer_rows and other_rows, acct
    assert all("--gpus=" in r[3] and "gres/gpu=" in r[1] for r in infer_rows), infer_rows
    assert all("gres/gpu" not in r[1] for r in other_rows), other_rows  # convert: no GPU
    # fetch, score and the leaderboard are localrules: only convert and inference were submitted
    assert all("rule_convert" in r[3] for r in other_rows)
    print(
        f"\nslurm: {len(rows)} jobs, workflow wall {wall:.0f} s; "
        f"jobs: {[(r[0], r[1], r[2]) for r in rows]}"
    )

    # cancel a running job, let the rest finish, rerun: only the cancelled work is redone
    ws.write_config({**_config(ws), "tasks": {"mul": {"shards": 3}}})
    # one shard per allocation here, so that cancelling one leaves the others running
    proc = subprocess.Popen(
        ws.command("--cores", "2", *SLURM_ARGS, "--group-components", "inference=1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    cancelled = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and cancelled is None:
        q = subprocess.run(
            ["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k"], capture_output=True, text=True
        ).stdout.splitlines()
        for line in q:
            jid, comment = line.split("|", 1)
            if "infer" in comment:  # only the mul shards are inference jobs in this run
                subprocess.run(["scancel", jid], check=True)
                cancelled = comment
                break
        time.sleep(0.5)
    assert cancelled, "no inference job seen running"
    # The plugin reads the cancellation as a user abort and may then wait forever
    # (it ignores SIGTERM): once the queue is empty, stop it with SIGINT, as a user would.
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if not subprocess.run(
            ["squeue", "-h", "-o", "%i"], capture_output=True, text=True
        ).stdout.strip():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(timeout=120)
            break
        time.sleep(1)
    key = source_key(model)
    preds = ws.wd / f"results/predictions/tiny-llama/{key}/fp32/mul"
    done = {p: p.stat().st_mtime_ns for p in preds.rglob("*.json")}
    assert len(done) < 3  # the cancelled shard is missing
    ws.snakemake(*SLURM_ARGS, timeout=900)
    after = {p: p.stat().st_mtime_ns for p in preds.rglob("*.json")}
    assert len(after) == 3 and all(after[p] == t for p, t in done.items())
