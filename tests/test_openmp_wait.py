"""An inference job's OpenMP wait policy: passive when its cores are already busy."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from llmboard.inference.threads import (
    cpu_times,
    free_cores,
    openmp_wait_policy,
    wait_policy,
)

# two readings of a 2-CPU /proc/stat, 1 s = 100 ticks apart: cpu0 idle throughout, cpu1
# running a competitor (user time) but for 10 ticks of idle and 5 of iowait
BEFORE = """cpu  500 0 100 1900 20 0 0 0 0 0
cpu0 200 0 50 1000 10 0 0 0 0 0
cpu1 300 0 50 900 10 0 0 0 0 0
intr 12345
ctxt 999
"""
AFTER = """cpu  585 0 100 2015 25 0 0 0 0 0
cpu0 200 0 50 1100 10 0 0 0 0 0
cpu1 385 0 50 910 15 0 0 0 0 0
intr 23456
ctxt 1999
"""


def test_proc_stat_is_read_per_cpu():
    assert cpu_times(BEFORE) == {0: (1010, 1260), 1: (910, 1260)}
    assert cpu_times("\n" + BEFORE + "\n") == cpu_times(BEFORE)  # blank lines: nothing
    assert free_cores(BEFORE, AFTER, [0, 1]) == pytest.approx(1.15)
    assert free_cores(BEFORE, AFTER, [0]) == pytest.approx(1.0)
    assert free_cores(BEFORE, AFTER, [1]) == pytest.approx(0.15)
    assert free_cores(BEFORE, AFTER, [7]) == 0.0  # a CPU the readings do not list


def test_passive_only_when_the_threads_lack_free_cores():
    assert wait_policy(2.0, 2) is None
    assert wait_policy(1.6, 2) is None  # a little noise beside an idle machine
    assert wait_policy(1.15, 2) == "PASSIVE"  # one core taken by another process
    assert wait_policy(0.2, 1) is None  # one thread never waits at a barrier


def test_the_users_setting_is_kept():
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert openmp_wait_policy(2, env) == (
        "ACTIVE",
        "OMP_WAIT_POLICY=ACTIVE from the environment: kept",
    )
    env = {"GOMP_SPINCOUNT": "1000"}
    policy, line = openmp_wait_policy(2, env)
    assert policy is None and "GOMP_SPINCOUNT=1000" in line and "OMP_WAIT_POLICY" not in env


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux CPU affinity")
def test_a_cpu_bound_competitor_on_the_jobs_cores_makes_it_passive():
    cpus = sorted(os.sched_getaffinity(0))
    # one `yes` pinned to each of the job's cores: none of them has time to spare
    hogs = [
        subprocess.Popen(
            ["yes"],
            stdout=subprocess.DEVNULL,
            preexec_fn=lambda c=c: os.sched_setaffinity(0, {c}),
        )
        for c in cpus
    ]
    try:
        time.sleep(0.2)  # running
        env = {}
        policy, line = openmp_wait_policy(max(2, len(cpus)), env)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert policy == "PASSIVE" and env["OMP_WAIT_POLICY"] == "PASSIVE", line
    assert "busy" in line
