"""The request store's payoff: every limit doubled, with and without the store.

The default board's tasks (config.yaml, limits scaled by --fraction to keep the run
short), the real SmolLM2, fp32. Each round, interleaved:
  A. from scratch: every task at 2x its limit, no store;
  B. the store filled by a run at 1x (not timed), then every task at 2x with the store.
Inference time only (the model is loaded once, outside the timings); minimum and median
of each over the rounds, and B / A (target: <= 55 %). Outputs are compared too.
``--generation N``: gsm8k_cot's first N documents, then 2N, instead (generations stored).
The engine runs as the config says (``inference.batch_invariant``, ``draft_tokens``).

    .venv/bin/python -m bench.request_store --rounds 3 --fraction 0.2
    .venv/bin/python -m bench.request_store --rounds 3 --generation 8
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def board_requests(settings, fraction: float, factor: int) -> list:
    """Every request of the board's tasks at ``factor`` x their (scaled) limits."""
    from llmboard.inference.engine import LoglikelihoodRequest
    from llmboard.settings import tasks_dir
    from llmboard.tasks.definitions import load_task
    from llmboard.tasks.documents import fewshot_pool, load_docs
    from llmboard.tasks.prompts import build_requests
    from llmboard.workflow.plan import build_plan

    plan = build_plan(settings, tasks_dir(settings, REPO), root=REPO)
    out = []
    for task in plan.tasks.values():
        limit = task.spec.get("limit")
        scaled = None if limit is None else max(1, round(limit * fraction)) * factor
        t = load_task(task.path, {**{k: task.spec.get(k) for k in ("fewshot",)}, "limit": scaled})
        docs = load_docs(t)
        out += [
            LoglikelihoodRequest(r["context"], r["continuation"])
            for r in build_requests(t, docs, pool=fewshot_pool(t))
        ]
    return out


def gsm8k_requests(n: int) -> list:
    from llmboard.inference.api import GenerationRequest
    from llmboard.tasks.definitions import load_task
    from llmboard.tasks.documents import fewshot_pool, load_docs
    from llmboard.tasks.prompts import build_generation_requests

    task = load_task(REPO / "tasks" / "gsm8k_cot.yaml", {"limit": n})
    rows = build_generation_requests(task, load_docs(task), pool=fewshot_pool(task))
    return [GenerationRequest(r["context"], tuple(r["until"]), r["max_gen_toks"]) for r in rows]


def _same(a, b) -> tuple[bool, str]:
    """Whether two runs' outputs agree (fp32 tolerance, or equal texts), and how far."""
    if hasattr(a[0], "text"):
        same = sum(x.text == y.text for x, y in zip(a, b))
        return same == len(a), f"{same}/{len(a)} texts identical"
    diff = max(abs(x.loglikelihood - y.loglikelihood) for x, y in zip(a, b))
    ok = diff < 1e-4 and all(x.is_greedy == y.is_greedy for x, y in zip(a, b))
    return ok, f"max |dLL| {diff:.1e}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--out", default=str(REPO / "bench" / "out"))
    ap.add_argument("--generation", type=int, default=0, metavar="N")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    from llmboard.checkpoints.convert import convert
    from llmboard.checkpoints.fetch import fetch
    from llmboard.checkpoints.sources import parse_source
    from llmboard.inference.api import LoadOptions
    from llmboard.inference.engine import engine_for
    from llmboard.inference.loading import load_model
    from llmboard.inference.request_store import RequestStore, StoredLM
    from llmboard.settings import settings_from_file

    torch.set_num_threads(os.cpu_count() or 1)
    settings = settings_from_file(REPO / "config.yaml")
    model_dir = Path(args.out) / "smollm2"
    if not (model_dir / "manifest.json").exists():
        entry = next(iter(settings.models.values()))
        fetch(
            parse_source(entry.source_fields()),
            Path(args.out) / "smollm2-ckpt",
            Path(args.out) / "partial",
        )
        convert(Path(args.out) / "smollm2-ckpt", model_dir)
    model, tok, context = load_model(model_dir, "fp32")
    options = LoadOptions.of(settings.inference)

    def engine():
        return engine_for(model, tok, options)

    if args.generation:
        once, twice = gsm8k_requests(args.generation), gsm8k_requests(2 * args.generation)
        print(f"gsm8k_cot: {len(once)} prompts at 1x, {len(twice)} at 2x")

        def run(lm, requests):
            return lm.generate_until(requests)
    else:
        once = board_requests(settings, args.fraction, 1)
        twice = board_requests(settings, args.fraction, 2)
        print(f"{len(once)} requests at 1x, {len(twice)} at 2x (limits x {args.fraction})")

        def run(lm, requests):
            return lm.loglikelihood(requests)

    print(f"batch_invariant: {options.batch_invariant}, draft_tokens: {options.draft_tokens}")
    times: dict[str, list[float]] = {"scratch": [], "store": []}
    identical = True
    for r in range(args.rounds):
        lm = engine()
        t = time.perf_counter()
        scratch = run(lm, twice)
        times["scratch"].append(time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as folder:

            def stored_lm():
                inner = engine()
                where = (folder, context.checkpoint_sha256, "fp32", inner.numerics)
                return StoredLM(inner, RequestStore(*where), RequestStore(*where, "generation"))

            run(stored_lm(), once)  # fills the store (not timed)
            lm2 = stored_lm()
            t = time.perf_counter()
            reused = run(lm2, twice)
            times["store"].append(time.perf_counter() - t)
        same, how = _same(scratch, reused)
        identical &= same
        print(
            f"round {r + 1}: scratch {times['scratch'][-1]:.1f} s, with store "
            f"{times['store'][-1]:.1f} s ({lm2.stats['store_hits']} hits, "
            f"{lm2.stats['store_misses']} computed), {how}"
        )
    for k, ts in times.items():
        print(f"{k:<8} min {min(ts):.1f} s, median {statistics.median(ts):.1f} s")
    ratio = statistics.median(times["store"]) / statistics.median(times["scratch"])
    print(f"with store / from scratch (medians): {ratio:.0%}; outputs agree: {identical}")


if __name__ == "__main__":
    main()
