"""A busy CPU: how much slower the engine gets with one CPU-bound process beside it, and
what the OpenMP wait policy does to that.

Each measurement is a fresh process (the wait policy is read when OpenMP starts) that
loads SmolLM2, warms up, and times one workload: wall time and the CPU time of all its
threads. Configurations and idle/busy alternate (A idle, A busy, B idle, B busy, ...)
for --rounds rounds; the competitor is ``yes > /dev/null`` started just before a busy
measurement and killed after it. Prints min and median wall and CPU seconds per
configuration and state, and busy / idle.

    .venv/bin/python -m bench.busy_cpu --rounds 3
    .venv/bin/python -m bench.busy_cpu --workloads choice --policies default PASSIVE spin:10000

A policy is ``default`` (libgomp's: spin a while, then sleep), ``ACTIVE`` or ``PASSIVE``
(OMP_WAIT_POLICY), ``spin:N`` (GOMP_SPINCOUNT=N: spin N rounds, then sleep), or ``auto``:
what an inference job does (``llmboard.inference.threads``: PASSIVE if its cores are
busy when it starts, else libgomp's default). The competitor starts before the child.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "resources/models/smollm2-135m-instruct/0b8d6ce683ce"

CHILD = r"""
import json, os, resource, sys, time
from dataclasses import replace
from llmboard.settings import InferenceSettings, schema_default
if sys.argv[4] == "auto":  # as an inference job decides, before torch loads libgomp
    from llmboard.inference.threads import openmp_wait_policy
    openmp_wait_policy(schema_default("inference", "threads"))
import torch
from llmboard.inference.api import GenerationRequest, LoadOptions, LoglikelihoodRequest, load_backend
from llmboard.tasks.definitions import load_task
from llmboard.tasks.documents import fewshot_pool, load_docs
from llmboard.tasks.prompts import build_generation_requests, build_requests

model, workload, invariant = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
torch.set_num_threads(schema_default("inference", "threads"))
opts = replace(LoadOptions.of(InferenceSettings.defaults()), batch_invariant=invariant)
lm = load_backend("transformers", model, "fp32", opts)[0]
if workload == "choice":
    task = load_task("tasks/arc_easy.yaml", {"limit": 40})
    rows = build_requests(task, load_docs(task), pool=fewshot_pool(task))
    reqs = [LoglikelihoodRequest(r["context"], r["continuation"]) for r in rows]
    run = lambda: lm.loglikelihood(reqs)
else:
    task = load_task("tasks/gsm8k_cot.yaml", {"limit": 4})
    rows = build_generation_requests(task, load_docs(task), pool=fewshot_pool(task))
    reqs = [GenerationRequest(r["context"], tuple(r["until"]), 64) for r in rows]
    run = lambda: lm.generate_until(reqs)
run()  # warm-up
sys.stdout.flush()
sys.stdin.readline()  # the parent starts the competitor now
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime
t, c = time.perf_counter(), cpu()
run()
wall, used = time.perf_counter() - t, cpu() - c
waits = os.environ.get("OMP_WAIT_POLICY", "default")
print(json.dumps({"wall": wall, "cpu": used, "waits": waits}), flush=True)
"""


def measure(policy: str, workload: str, busy: bool, invariant: bool) -> dict:
    from llmboard.inference.threads import USER_SETTINGS

    env = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS}  # only the policy
    env |= {**_policy_env(policy), "TOKENIZERS_PARALLELISM": "false"}
    # the competitor first: ``auto`` looks at the cores as the child starts
    hog = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) if busy else None
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(MODEL), workload, "1" if invariant else "0", policy],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        out, _ = child.communicate("go\n")
    finally:
        if hog:
            hog.kill()
            hog.wait()
    return json.loads(out.strip().splitlines()[-1])


def _policy_env(policy: str) -> dict:
    if policy in ("default", "auto"):
        return {}
    if policy.startswith("spin:"):
        return {"GOMP_SPINCOUNT": policy.partition(":")[2]}
    return {"OMP_WAIT_POLICY": policy}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workloads", nargs="+", default=["choice", "generation"])
    ap.add_argument("--policies", nargs="+", default=["default", "PASSIVE"])
    ap.add_argument("--packed", action="store_true", help="batch_invariant: false")
    args = ap.parse_args()
    for workload in args.workloads:
        got: dict = {}
        for _ in range(args.rounds):
            for policy in args.policies:
                for busy in (False, True):
                    r = measure(policy, workload, busy, not args.packed)
                    got.setdefault((policy, busy), []).append(r)
        print(f"{workload} ({'packed' if args.packed else 'invariant'}), {args.rounds} rounds:")
        for policy in args.policies:
            line = f"  {policy:12s}"
            for busy in (False, True):
                walls = [r["wall"] for r in got[(policy, busy)]]
                cpus = [r["cpu"] for r in got[(policy, busy)]]
                line += (
                    f" {'busy' if busy else 'idle'}: wall min {min(walls):.2f} / median "
                    f"{statistics.median(walls):.2f} s, cpu median {statistics.median(cpus):.2f} s;"
                )
            idle = statistics.median(r["wall"] for r in got[(policy, False)])
            busy = statistics.median(r["wall"] for r in got[(policy, True)])
            waits = {b: sorted({r["waits"] for r in got[(policy, b)]}) for b in (False, True)}
            print(
                f"{line} busy/idle {busy / idle:.2f}x; waits idle {waits[False]}, busy "
                f"{waits[True]}",
                flush=True,
            )


if __name__ == "__main__":
    main()
