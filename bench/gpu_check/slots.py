"""Check 6 (slots): two processes locking the one GPU slot run one after the other. Each
holder is this package's ``hold-slot`` subcommand, a process of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from .common import REPO, Row, Setup, Timer, failed, verdict


def slot_rows(setup: Setup, hold_seconds: float = 0.5) -> list[Row]:
    name = "gpu slots/2 processes, 1 GPU"
    try:
        with Timer(setup.timings, "slots"):
            held = two_slot_holders(setup, hold_seconds)
    except Exception as e:
        return [failed("slots", name, e)]
    a, b = sorted(held, key=lambda h: h["start"])
    figs = {
        "local_gpus": None if setup.cuda else 1,
        "holders": held,
        "gap_s": b["start"] - a["end"],
    }
    ok = (
        a["end"] <= b["start"]
        and all(h["cuda_visible_devices"] == "0" for h in held)
        and all(h.get("cuda_devices", 1) == 1 for h in held)
    )
    target = "intervals do not overlap; each holder sees CUDA_VISIBLE_DEVICES=0"
    if setup.cuda:
        target += " and one CUDA device"
    return [Row(6, name, verdict(ok), figs, target)]


def two_slot_holders(setup: Setup, hold_seconds: float) -> list[dict]:
    """Two processes at once, each taking one slot as an inference job does (before CUDA
    starts); on a GPU machine the slots are what nvidia-smi lists (local_gpus=None)."""
    lock_dir = setup.work / "gpu-locks"
    cmd = [sys.executable, "-m", "bench.gpu_check", "hold-slot"]  # from the repo root
    cmd += ["--lock-dir", str(lock_dir), "--seconds", str(hold_seconds)]
    cmd += ["--local-gpus", "auto"] if setup.cuda else ["--local-gpus", "1"]
    if setup.cuda:
        cmd.append("--cuda")
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    procs = [
        subprocess.Popen(
            cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    held = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            if proc.returncode:
                raise RuntimeError(f"slot holder exited {proc.returncode}: {err.strip()[-300:]}")
            held.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:  # a holder left waiting on the lock would outlive the check
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return held


def hold_slot(lock_dir: str, local_gpus: str, seconds: float, cuda: bool) -> dict:
    from llmboard.inference.gpu_slots import acquire_for_job

    slots = acquire_for_job(1, None if local_gpus == "auto" else int(local_gpus), lock_dir)
    start = time.time()
    got = {"pid": os.getpid(), "ids": slots.ids}
    got["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cuda:  # CUDA starts only now, seeing the slot's GPU alone
        import torch

        got["cuda_devices"] = torch.cuda.device_count()
        torch.ones(1, device="cuda").sum().item()
    time.sleep(seconds)
    got["start"], got["end"] = start, time.time()  # end before release: never overlaps itself
    slots.release()
    return got
