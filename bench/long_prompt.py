"""Benchmark (#18): one long prompt, three ways through SmolLM2, interleaved.

MMLU high-school European history, 5-shot first_n (about 2,800 tokens per prompt, four
one-token continuations). For each document, in one process, round after round:

- ``causal``: one plain forward of the context's tokens, transformers' own fused causal
  attention (no mask tensor): the floor for these tokens;
- ``mask``: llmboard's context tree through an explicit 4-D mask, as the engine ran a
  tree before prefixes (forced by a token budget wider than the tree, so the tree is
  one row and its context is not split off);
- ``engine``: the engine as it runs now at the default budget: a tree longer than the
  budget computes its context through the causal path in budget-sized pieces, then only
  the last context token and the branches attend to it (cascade attention).

Prints minimum and median seconds of each over the rounds, tokens/s, and the ratios
``mask / causal`` and ``engine / causal``; checks that the engine's log-likelihoods
equal the mask path's within the oracle tolerance.

    .venv/bin/python -m bench.long_prompt --docs 3 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def requests_of(subject: str, docs: int):
    """The documents' log-likelihood requests, grouped per document."""
    from bench.prefix_sharing import build_subject
    from llmboard.inference.engine import LoglikelihoodRequest
    from llmboard.tasks.documents import fewshot_pool, load_docs
    from llmboard.tasks.prompts import build_requests

    s = build_subject(subject, docs, Path(tempfile.mkdtemp()))
    rows = build_requests(s.task, load_docs(s.task), range(docs), pool=fewshot_pool(s.task))
    out: dict[int, list] = {}
    for r in rows:
        out.setdefault(r["doc_id"], []).append(
            LoglikelihoodRequest(r["context"], r["continuation"])
        )
    return list(out.values())


def causal(model, ids) -> None:
    import torch

    with torch.inference_mode():
        model.base_model(input_ids=torch.tensor([ids]), use_cache=False)


def main() -> None:
    import torch

    from bench.engine_vs_lmeval import ensure_model
    from llmboard.inference.engine import TransformersLM
    from llmboard.inference.loading import load_model
    from llmboard.settings import schema_default

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subject", default="high_school_european_history")
    ap.add_argument("--docs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    budget = schema_default("inference", "token_budget")

    model, tok, _ = load_model(ensure_model(REPO / "bench" / "out"), args.dtype)
    docs = requests_of(args.subject, args.docs)
    engine = TransformersLM(model, tok, token_budget=budget)
    ctx = [engine.tokenize_pair(reqs[0])[0] for reqs in docs]
    wide = max(len(c) for c in ctx) + 64  # the whole tree in one row: the mask path
    print(f"{args.subject}: {args.docs} docs, context tokens {[len(c) for c in ctx]}")

    walls: dict[str, list[float]] = {"causal": [], "mask": [], "engine": []}
    worst = 0.0
    for r in range(args.rounds):
        for name in walls:
            t = time.perf_counter()
            if name == "causal":
                for c in ctx:
                    causal(model, c)
            else:
                lm = TransformersLM(model, tok, token_budget=wide if name == "mask" else budget)
                got = [lm.loglikelihood(reqs) for reqs in docs]
            walls[name].append(time.perf_counter() - t)
            if name == "mask":
                ref = got
            elif name == "engine":
                for a, b in zip(sum(got, []), sum(ref, [])):
                    worst = max(worst, abs(a.loglikelihood - b.loglikelihood))
                    assert abs(a.loglikelihood - b.loglikelihood) <= max(
                        1e-4, 1e-5 * abs(b.loglikelihood)
                    ), (a, b)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in walls.items()))
    tokens = sum(len(c) for c in ctx)
    base = {k: (min(v), statistics.median(v)) for k, v in walls.items()}
    print(
        f"{'path':8} {'min s':>8} {'median s':>9} {'tok/s (min)':>12} {'vs causal (min/med)':>20}"
    )
    for k, (lo, med) in base.items():
        ratio = f"{lo / base['causal'][0]:.2f} / {med / base['causal'][1]:.2f}"
        print(f"{k:8} {lo:8.2f} {med:9.2f} {tokens / lo:12.0f} {ratio:>20}")
    print(f"engine vs mask path: max |dLL| {worst:.2e}")


if __name__ == "__main__":
    main()
