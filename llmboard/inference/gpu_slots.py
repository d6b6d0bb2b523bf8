"""GPU slots for local runs: file locks, taken before torch initialises CUDA.

Snakemake gives local jobs a GPU *count* (``--resources gpu=N``) but no ids
(snakemake issue #281). Each job therefore locks ``N`` slot files with
``flock`` -- all or none, so two jobs never deadlock holding half each -- and
sets ``CUDA_VISIBLE_DEVICES`` to the ids it holds. The kernel drops a flock when
its process dies, so a killed job never leaves a slot taken. Under SLURM the
allocation's ``CUDA_VISIBLE_DEVICES`` is used as is.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Slots:
    ids: list[int]
    files: list = field(default_factory=list)

    def release(self) -> None:
        for f in self.files:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
        self.files.clear()


def local_gpu_ids(local_gpus: int | list[int] | tuple[int, ...] | None) -> list[int]:
    """The GPUs local jobs may use: a count, a list of ids, or (None) what nvidia-smi lists."""
    if local_gpus is not None:
        return (
            list(range(local_gpus)) if isinstance(local_gpus, int) else [int(x) for x in local_gpus]
        )
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
        return [i for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]
    except (OSError, subprocess.SubprocessError):
        return []


def acquire(
    n: int,
    ids: list[int],
    lock_dir: str | os.PathLike,
    *,
    timeout: float | None = None,
    poll: float = 0.5,
) -> Slots:
    if n > len(ids):
        raise RuntimeError(f"job needs {n} GPU(s) but only {len(ids)} exist here ({ids})")
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    while True:
        held = Slots([])
        for i in ids:
            f = open(lock_dir / f"gpu{i}.lock", "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
            held.ids.append(i)
            held.files.append(f)
            if len(held.ids) == n:
                return held
        held.release()  # not enough free: give back and wait, never hold a partial set
        if timeout is not None and time.monotonic() - start > timeout:
            raise TimeoutError(f"no {n} free GPU slot(s) among {ids} after {timeout:.0f} s")
        time.sleep(poll)


def acquire_for_job(n: int, local_gpus, lock_dir: str | os.PathLike) -> Slots:
    if n <= 0:
        return Slots([])
    if os.environ.get("SLURM_JOB_ID") and os.environ.get("CUDA_VISIBLE_DEVICES"):
        log.info("SLURM allocation: CUDA_VISIBLE_DEVICES=%s", os.environ["CUDA_VISIBLE_DEVICES"])
        return Slots([])
    slots = acquire(n, local_gpu_ids(local_gpus), lock_dir)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in slots.ids)
    log.info(
        "GPU slots %s locked; CUDA_VISIBLE_DEVICES=%s",
        slots.ids,
        os.environ["CUDA_VISIBLE_DEVICES"],
    )
    return slots
