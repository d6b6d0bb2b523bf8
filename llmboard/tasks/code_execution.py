"""Score code tasks by running their programs in the sandbox (``sandbox.py``).

A program is what HF evaluate's ``code_eval`` (lm-eval's humaneval and mbpp metric)
builds: the candidate (the filtered generation), a line break, and the document's test
(``doc_to_target``). code_eval runs it with a 3 s timeout in a forked process of the
scorer, with some builtins disabled; llmboard runs it in ``sandbox.run_program``: its own
process, namespaces and limits, so that hostile code cannot reach the scorer, the files
or the network. The outcome of each program (``passed``, ``failed``, ``timed_out``,
``killed``, and why) is kept in the score, with the program's sha256, so that the
report shows it and ``llmboard verify`` checks that it belongs to the predictions.

The settings come from the config's ``code_execution`` (``settings``): none of them is
part of the task, so changing a timeout re-scores without any model.
"""

from __future__ import annotations

import hashlib

from .sandbox import Limits, check_sandbox, run_programs

# HF evaluate's code_eval default timeout (lm-eval passes none)
DEFAULT_TIMEOUT_S = 3.0


def program_sha256(program: str) -> str:
    return hashlib.sha256(program.encode("utf-8")).hexdigest()


def limits(code: dict) -> Limits:
    """The sandbox's limits from the config's ``code_execution`` mapping."""
    base = Limits()
    timeout_s = float(code.get("timeout_s", DEFAULT_TIMEOUT_S))
    return Limits(
        timeout_s=timeout_s,
        cpu_s=max(1, int(code.get("cpu_s", timeout_s + 1))),
        memory_bytes=int(code.get("memory_mb", base.memory_bytes >> 20)) << 20,
        processes=int(code.get("processes", base.processes)),
        file_size_bytes=base.file_size_bytes,
        output_bytes=base.output_bytes,
    )


def run_code(programs: list[list[str]], code: dict) -> list[dict]:
    """Each document's programs run in the sandbox: ``[{"programs": [{"sha256", "status",
    "reason", "duration_s"}, ...]}, ...]``. A sandbox that cannot start raises
    ``sandbox.SandboxUnavailable`` (an error of the run, never a failed test)."""
    check_sandbox()
    flat = [p for progs in programs for p in progs]
    outcomes = iter(run_programs(flat, limits(code), workers=int(code.get("workers", 2))))
    out = []
    for progs in programs:
        runs = []
        for p in progs:
            o = next(outcomes)
            runs.append(
                {
                    "sha256": program_sha256(p),
                    "status": o.status,
                    "reason": o.reason,
                    "duration_s": round(o.duration_s, 3),
                }
            )
        out.append({"programs": runs})
    return out
