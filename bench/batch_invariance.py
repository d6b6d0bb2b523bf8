"""What batch invariance buys and costs: the packed engine against inference.batch_invariant.

For each precision and task (the real SmolLM2, real documents): how many requests give
byte-identical log-likelihoods at token budgets 256 and 8,192, and the largest change;
then the time of both modes at the default budget, interleaved (packed, invariant,
packed, invariant, ...) for --rounds rounds, min and median of each and their ratio.
Generation the same way: gsm8k_cot 8-shot greedy, the task's own stop strings and
max_gen_toks, texts compared between the modes and between budgets 128 and 4,096.

    .venv/bin/python -m bench.batch_invariance
    .venv/bin/python -m bench.batch_invariance --rounds 3 --precisions fp32 bf16
    .venv/bin/python -m bench.batch_invariance --only generation --generation-docs 8
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "resources/models/smollm2-135m-instruct/0b8d6ce683ce"
# (task file, overrides, documents): the measurement, and MMLU 5-shot (prefix sharing)
TASKS = [
    ("arc_easy.yaml", None, 40),
    ("hellaswag.yaml", None, 25),
    ("mmlu/mmlu_anatomy.yaml", None, 20),
    ("mmlu/mmlu_anatomy.yaml", {"num_fewshot": 5}, 20),
]


def main() -> None:
    import torch

    from llmboard.inference.api import LoadOptions, LoglikelihoodRequest, load_backend
    from llmboard.settings import InferenceSettings, schema_default
    from llmboard.tasks.definitions import load_task
    from llmboard.tasks.documents import fewshot_pool, load_docs
    from llmboard.tasks.prompts import build_requests

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=schema_default("inference", "threads"))
    ap.add_argument("--only", choices=["loglikelihood", "generation"])
    ap.add_argument("--generation-docs", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    job = LoadOptions.of(InferenceSettings.defaults())
    budget = job.token_budget
    print(f"threads {args.threads}, default budget {budget}, model {MODEL.name}")
    for precision in args.precisions:
        lms = {
            mode: load_backend(
                "transformers",
                MODEL,
                precision,
                replace(job, batch_invariant=mode == "invariant"),
            )[0]
            for mode in ("packed", "invariant")
        }
        if args.only != "loglikelihood":
            _generation(lms, precision, args, budget)
        if args.only == "generation":
            continue
        for path, overrides, n in TASKS:
            task = load_task(REPO / "tasks" / path, overrides)
            shots = (overrides or {}).get("num_fewshot", 0)
            docs = load_docs(task)
            reqs = build_requests(task, docs, range(n), pool=fewshot_pool(task))
            pairs = [
                lms["packed"].tokenize_pair(LoglikelihoodRequest(r["context"], r["continuation"]))
                for r in reqs
            ]
            line = f"{precision} {task.name} {shots}-shot ({n} docs, {len(pairs)} requests)"
            for mode, lm in lms.items():
                got = {}
                for b in (256, 8192):
                    lm.token_budget = b
                    got[b] = lm.loglikelihood_tokens(pairs)
                same = sum(a == b for a, b in zip(got[256], got[8192]))
                worst = max(abs(a.loglikelihood - b.loglikelihood) for a, b in zip(*got.values()))
                line += f"; {mode}: identical {same}/{len(pairs)}, max |dLL| {worst:.2g}"
            print(line, flush=True)
            for lm in lms.values():
                lm.token_budget = budget
            times = _interleaved(lms, lambda lm, p=pairs: lm.loglikelihood_tokens(p), args.rounds)
            _print_times(times, budget)


def _interleaved(lms, run, rounds):
    """Seconds of ``run(lm)`` per mode, the modes alternating, ``rounds`` rounds."""
    times = {m: [] for m in lms}
    for _ in range(rounds):
        for mode, lm in lms.items():
            t0 = time.perf_counter()
            run(lm)
            times[mode].append(time.perf_counter() - t0)
    return times


def _print_times(times, budget) -> None:
    mins = {m: min(v) for m, v in times.items()}
    meds = {m: statistics.median(v) for m, v in times.items()}
    print(
        f"    time at budget {budget}: packed min {mins['packed']:.2f} s / median "
        f"{meds['packed']:.2f} s; invariant min {mins['invariant']:.2f} s / median "
        f"{meds['invariant']:.2f} s; invariant/packed {mins['invariant'] / mins['packed']:.2f}x"
        f" (min) {meds['invariant'] / meds['packed']:.2f}x (median)",
        flush=True,
    )


def _generation(lms, precision, args, budget) -> None:
    from llmboard.inference.api import GenerationRequest
    from llmboard.tasks.definitions import load_task
    from llmboard.tasks.documents import fewshot_pool, load_docs
    from llmboard.tasks.prompts import build_generation_requests

    task = load_task(REPO / "tasks" / "gsm8k_cot.yaml")
    n = args.generation_docs
    rows = build_generation_requests(task, load_docs(task), range(n), pool=fewshot_pool(task))
    reqs = [GenerationRequest(r["context"], tuple(r["until"]), r["max_gen_toks"]) for r in rows]
    texts = {}
    for mode, lm in lms.items():
        for b in (128, 4096):
            lm.token_budget = b
            texts[(mode, b)] = [g.text for g in lm.generate_until(reqs)]
    inv = texts[("invariant", 128)]
    print(
        f"{precision} gsm8k_cot 8-shot generation ({n} docs): invariant identical at 128 vs "
        f"4,096: {sum(a == b for a, b in zip(inv, texts[('invariant', 4096)]))}/{n}; packed: "
        f"{sum(a == b for a, b in zip(texts[('packed', 128)], texts[('packed', 4096)]))}/{n}; "
        f"invariant = packed: {sum(a == b for a, b in zip(inv, texts[('packed', 128)]))}/{n}",
        flush=True,
    )
    for lm in lms.values():
        lm.token_budget = budget
    times = _interleaved(lms, lambda lm: lm.generate_until(reqs), args.rounds)
    tokens = sum(g.tokens for g in lms["invariant"].generate_until(reqs))
    print(f"    {tokens} tokens generated", flush=True)
    _print_times(times, budget)


if __name__ == "__main__":
    main()
