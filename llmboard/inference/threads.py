"""How an inference job's OpenMP threads wait: decided once, before torch starts.

libgomp (PyTorch's OpenMP on Linux) lets a thread that reaches a barrier spin a while
before it sleeps. On an idle machine that is the fast choice: a decoding step is
hundreds of small parallel regions, and a sleeping thread costs a wake-up at each
(``OMP_WAIT_POLICY=PASSIVE`` made idle generation 40-45 % slower, docs/benchmarks.md).
On a machine where another process already holds the job's cores, the spinning thread
burns the time slices of the thread it waits for: 3-4.5x slower, CPU time doubled. No
spin count serves both, so the job looks at its own cores first: if they have less
free time than its threads need, its threads sleep at barriers at once (PASSIVE);
otherwise libgomp's default stands. An ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``
already in the environment is the user's choice and is kept.

libgomp reads the variable when it loads, so this runs before ``import torch``.
"""

from __future__ import annotations

import os
import time

SAMPLE_SECONDS = 0.25  # long enough to see a CPU-bound competitor, short beside a job
# threads' worth of free cores that must be missing before waiting passively: half a
# core, so that the sampling's own noise (a shell, Snakemake polling) does not count
SLACK = 0.5
USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def cpu_times(stat_text: str) -> dict[int, tuple[int, int]]:
    """``/proc/stat``'s per-CPU lines as {cpu: (idle ticks, total ticks)}; idle includes
    iowait, total the eight fields that partition a CPU's time (guest time is already
    in user time)."""
    out = {}
    for line in stat_text.splitlines():
        name, *fields = line.split() or [""]
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(x) for x in fields[:8]]
        out[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks))
    return out


def free_cores(before: str, after: str, cpus) -> float:
    """Idle time of ``cpus`` between two ``/proc/stat`` readings, in cores (2.0: two
    cores idle throughout)."""
    a, b = cpu_times(before), cpu_times(after)
    free = 0.0
    for c in cpus:
        if c in a and c in b and b[c][1] > a[c][1]:
            free += (b[c][0] - a[c][0]) / (b[c][1] - a[c][1])
    return free


def wait_policy(free: float, threads: int) -> str | None:
    """``PASSIVE`` when the job's cores lack the free time its threads need, else None
    (libgomp's default)."""
    return "PASSIVE" if threads > 1 and free < threads - SLACK else None


def openmp_wait_policy(threads: int, env=os.environ) -> tuple[str | None, str]:
    """Set ``OMP_WAIT_POLICY`` in ``env`` for a job of ``threads`` threads from how busy
    its cores are now; returns (the policy set or kept, None for libgomp's default) and
    a line for the job's log."""
    for var in USER_SETTINGS:
        if var in env:
            return env.get("OMP_WAIT_POLICY"), f"{var}={env[var]} from the environment: kept"
    try:
        cpus = sorted(os.sched_getaffinity(0))
        with open("/proc/stat") as f:
            before = f.read()
        time.sleep(SAMPLE_SECONDS)
        with open("/proc/stat") as f:
            after = f.read()
    except (OSError, AttributeError):  # not Linux: nothing to read, libgomp's default
        return None, "OpenMP wait policy: libgomp's default (no /proc/stat here)"
    free = free_cores(before, after, cpus)
    policy = wait_policy(free, threads)
    seen = f"{free:.1f} of {len(cpus)} core(s) free for {threads} thread(s)"
    if policy is None:
        return None, f"OpenMP wait policy: libgomp's default ({seen})"
    env["OMP_WAIT_POLICY"] = policy
    return policy, f"OpenMP wait policy: {policy}, the cores are busy ({seen})"
