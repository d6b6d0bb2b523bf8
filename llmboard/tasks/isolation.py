"""Run checks that may hang (sympy's simplify, Math-Verify's parser) in worker processes.

lm-eval bounds each answer check with ``signal.alarm``, which only works in the main
thread of the main interpreter: called from any other thread, its ``timeout`` raises,
the check's blanket ``except`` turns that into "not equivalent", and every answer is
scored wrong (Math-Verify #42, #55). Here the caller may be any thread or process: each
check runs in the main thread of a worker process, where the checks' own alarms work as
they do in lm-eval, so the scores are lm-eval's. A wall-clock limit on top
(``hard_timeout_s``) kills a worker whose check never returns to Python (a hang inside
C code), records that item as ``"killed"`` and carries on with a fresh worker.

The workers are ``python -m llmboard.tasks.isolation`` subprocesses speaking JSON lines
on stdin/stdout, not ``multiprocessing``: its ``spawn`` and ``forkserver`` re-run the
caller's ``__main__`` (a Snakemake job's script) in every worker, and ``fork`` copies a
process that holds torch's threads.

``run_isolated("module:function", items)`` returns ``[(status, value), ...]`` in the
items' order: ``("ok", function(item))``, ``("killed", None)`` (over the hard limit or
the worker died), ``("error", message)`` (the function raised). Items and values are
JSON (tuples arrive as lists).
"""

from __future__ import annotations

import importlib
import json
import os
import queue
import select
import subprocess
import sys
import threading
from collections.abc import Sequence

DEFAULT_HARD_TIMEOUT_S = 60.0


def default_workers() -> int:
    """One worker per core the process may use, at most 4 (sympy imports take ~1 s each)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


class _Worker:
    """One worker process; ``call`` sends an item and waits for its answer."""

    def __init__(self, fn: str):
        self.fn = fn
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmboard.tasks.isolation"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )

    def call(self, item, timeout_s: float) -> tuple[str, object]:
        try:
            self.proc.stdin.write(json.dumps({"fn": self.fn, "item": item}) + "\n")
            self.proc.stdin.flush()
        except OSError:
            return "killed", None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline() if ready else ""
        if not line:  # over the limit, or the worker died
            self.close()
            return "killed", None
        reply = json.loads(line)
        if "error" in reply:
            return "error", reply["error"]
        return "ok", reply["value"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


def run_isolated(
    fn: str,
    items: Sequence,
    *,
    workers: int | None = None,
    hard_timeout_s: float = DEFAULT_HARD_TIMEOUT_S,
) -> list[tuple[str, object]]:
    """``fn(item)`` for each item in worker processes; see the module docstring."""
    results: list[tuple[str, object] | None] = [None] * len(items)
    todo: queue.Queue[int] = queue.Queue()
    for i in range(len(items)):
        todo.put(i)

    def serve() -> None:
        worker = None
        try:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                if worker is None or not worker.alive:
                    worker = _Worker(fn)
                results[i] = worker.call(items[i], hard_timeout_s)
        finally:
            if worker is not None:
                worker.close()

    threads = [
        threading.Thread(target=serve, daemon=True)
        for _ in range(min(workers or default_workers(), len(items)))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results  # type: ignore[return-value]


def _resolve(name: str):
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


def _serve_stdin() -> None:
    """The worker: one JSON request per line in, one reply per line out. The functions'
    own prints go to stderr, so that they cannot corrupt the replies."""
    out = sys.stdout
    sys.stdout = sys.stderr
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"value": _resolve(request["fn"])(request["item"])}
        except Exception as e:  # noqa: BLE001 - reported to the caller, item by item
            reply = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    _serve_stdin()
