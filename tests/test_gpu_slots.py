"""GPU slots: file locks taken before CUDA starts; never two jobs on one GPU."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import time

import pytest

from llmboard.inference.gpu_slots import acquire, acquire_for_job

from conftest import save_tiny
from test_workflow import _make_tasks
from workspace import Workspace


def _hold(lock_dir, n, ids, seconds, q):
    s = acquire(n, ids, lock_dir)
    q.put((os.getpid(), s.ids, time.time()))
    time.sleep(seconds)
    q.put((os.getpid(), "released", time.time()))
    s.release()


def test_concurrent_holders_never_share_and_wait_for_release(tmp_path):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    ids = [0, 1, 2]
    procs = [ctx.Process(target=_hold, args=(tmp_path, 2, ids, 1.0, q)) for _ in range(2)]
    for p in procs:
        p.start()
    events = [q.get(timeout=30) for _ in range(4)]
    for p in procs:
        p.join()
    held = [e for e in events if e[1] != "released"]
    first, second = sorted(held, key=lambda e: e[2])
    assert len(first[1]) == len(second[1]) == 2
    # only 3 GPUs: the second holder got its 2 only after the first released
    release_first = next(e[2] for e in events if e[0] == first[0] and e[1] == "released")
    assert second[2] >= release_first


def test_killed_holder_frees_its_slot(tmp_path):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_hold, args=(tmp_path, 1, [0], 60, q))
    p.start()
    assert q.get(timeout=30)[1] == [0]
    p.kill()
    p.join()
    s = acquire(1, [0], tmp_path, timeout=5)
    assert s.ids == [0]
    s.release()


def test_all_or_nothing_and_clear_errors(tmp_path):
    a = acquire(1, [0, 1], tmp_path)
    with pytest.raises(TimeoutError, match="no 2 free GPU slot"):
        acquire(2, [0, 1], tmp_path, timeout=0.5, poll=0.1)
    a.release()
    with pytest.raises(RuntimeError, match="needs 3 GPU.*only 2 exist"):
        acquire(3, [0, 1], tmp_path)


def test_slurm_allocation_is_used_as_is(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    s = acquire_for_job(1, 1, tmp_path)
    assert s.ids == [] and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert not list(tmp_path.iterdir())  # no local lock taken


@pytest.mark.slow
def test_real_snakemake_run_never_puts_two_jobs_on_one_gpu(tmp_path, tokenizer_dir):
    """3 GPU jobs (6 task shards), 2 GPU slots: the recorded slot intervals never overlap."""
    ws = Workspace(tmp_path)
    ws.tasks = _make_tasks(tmp_path)
    model = save_tiny("llama", tmp_path / "src", tokenizer_dir)
    ws.write_config(
        {
            "models": {"tiny": {"source": str(model)}},
            "precisions": ["fp32"],
            "tasks": {"add": {"shards": 3}, "mul": {"shards": 3}},
            "tasks_dir": str(ws.tasks),
            "inference": {"token_budget": 512, "threads": 1},
            # plan GPU jobs (1 GPU each for this model) over 2 local GPU slots
            "resources": {"gpu_memory_gb": 80, "local_gpus": 2},
        }
    )
    run = ws.snakemake("--cores", "4", "--resources", "gpu=2")
    infos = [
        json.loads(p.read_text())
        for p in (ws.wd / "results/predictions").rglob("*.json")
        if p.parent.name != "_jobs"
    ]
    assert len(infos) == 6
    spans = [(i["cuda_visible_devices"], *i["interval"]) for i in infos]
    assert {s[0] for s in spans} <= {"0", "1"}
    for a in spans:
        for b in spans:
            if a is not b and a[0] == b[0]:
                assert a[2] <= b[1] or b[2] <= a[1], (a, b)  # same GPU: never at the same time
    # and Snakemake did run two GPU jobs at once (its own log: a second infer job started
    # before the first finished). Not from the shard intervals: a tiny model's job can end
    # before its sibling's Python has imported torch on a loaded host, so whether those
    # overlap is timing, not scheduling.
    assert _most_at_once(run.stderr, "infer") == 2, run.stderr[-3000:]


def _most_at_once(log: str, rule: str) -> int:
    """The most jobs of ``rule`` running at one time, from Snakemake's log."""
    running, most, current = set(), 0, None
    for line in log.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            current = m.group(1)
        elif (m := re.match(r"^\s+jobid: (\d+)$", line)) and current == rule:
            running.add(m.group(1))
            most = max(most, len(running))
            current = None
        elif m := re.match(r"^Finished jobid: (\d+)", line):
            running.discard(m.group(1))
    return most
