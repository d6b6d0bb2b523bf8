"""The request store's payoff: every limit doubled, with and without the store.

The default board's tasks (config.yaml, limits scaled by --fraction to keep the run
short), the real SmolLM2, fp32. Each round, interleaved:
  A. from scratch: every task at 2x its limit, no store;
  B. the store filled by a run at 1x (not timed), then every task at 2x with the store.
Inference time only (the model is loaded once, outside the timings); minimum and median
of each over the rounds, and B / A (target: <= 55 %). Outputs are compared too.

    .venv/bin/python -m bench.request_store --rounds 3 --fraction 0.2
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


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--out", default=str(REPO / "bench" / "out"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    from llmboard.checkpoints.convert import convert
    from llmboard.checkpoints.fetch import fetch
    from llmboard.checkpoints.sources import parse_source
    from llmboard.inference.engine import TransformersLM
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
    budget = settings.inference.token_budget
    once = board_requests(settings, args.fraction, 1)
    twice = board_requests(settings, args.fraction, 2)
    print(f"{len(once)} requests at 1x, {len(twice)} at 2x (limits x {args.fraction})")
    times: dict[str, list[float]] = {"scratch": [], "store": []}
    identical = True
    for r in range(args.rounds):
        lm = TransformersLM(model, tok, token_budget=budget)
        t = time.perf_counter()
        scratch = lm.loglikelihood(twice)
        times["scratch"].append(time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as folder:

            def stored_lm():
                inner = TransformersLM(model, tok, token_budget=budget)
                store = RequestStore(folder, context.checkpoint_sha256, "fp32", inner.numerics)
                return StoredLM(inner, store)

            stored_lm().loglikelihood(once)  # fills the store (not timed)
            lm2 = stored_lm()
            t = time.perf_counter()
            reused = lm2.loglikelihood(twice)
            times["store"].append(time.perf_counter() - t)
        diff = max(abs(a.loglikelihood - b.loglikelihood) for a, b in zip(scratch, reused))
        identical &= diff < 1e-4 and all(
            a.is_greedy == b.is_greedy for a, b in zip(scratch, reused)
        )
        print(
            f"round {r + 1}: scratch {times['scratch'][-1]:.1f} s, with store "
            f"{times['store'][-1]:.1f} s ({lm2.stats['store_hits']} hits, "
            f"{lm2.stats['store_misses']} computed), max |dLL| {diff:.1e}"
        )
    for k, ts in times.items():
        print(f"{k:<8} min {min(ts):.1f} s, median {statistics.median(ts):.1f} s")
    ratio = statistics.median(times["store"]) / statistics.median(times["scratch"])
    print(
        f"with store / from scratch (medians): {ratio:.0%}; outputs within fp32 "
        f"tolerance: {identical}"
    )


if __name__ == "__main__":
    main()
