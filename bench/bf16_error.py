"""How far bf16 log-likelihoods are from fp32: llmboard packed, llmboard batch-invariant,
lm-eval (batch 8), on the same documents.

The spread between two bf16 runs mixes both runs' rounding; fp32 (llmboard packed, within
~1e-4 of lm-eval's fp32) is the reference each bf16 run is measured against instead: mean
and max |LL_bf16 - LL_fp32| over the requests, and documents whose pick (acc, acc_norm)
differs from fp32's.

    .venv/bin/python -m bench.bf16_error --tasks arc_easy hellaswag --limit 100
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.engine_vs_lmeval import REPO, ensure_model, picks, run_lmeval


def _llmboard(model_dir, task, precision, invariant: bool) -> dict:
    from llmboard.inference.api import LoadOptions, LoglikelihoodRequest, load_backend
    from llmboard.settings import schema_default
    from llmboard.tasks.documents import fewshot_pool, load_docs
    from llmboard.tasks.prompts import build_requests

    budget = schema_default("inference", "token_budget")
    lm = load_backend(
        "transformers", model_dir, precision, LoadOptions(budget, batch_invariant=invariant)
    )[0]
    rows = build_requests(task, load_docs(task), pool=fewshot_pool(task))
    res = lm.loglikelihood([LoglikelihoodRequest(r["context"], r["continuation"]) for r in rows])
    lls = {(r["doc_id"], r["choice"]): x.loglikelihood for r, x in zip(rows, res)}
    chars = {(r["doc_id"], r["choice"]): r["choice_chars"] for r in rows}
    return {"lls": lls, "chars": chars}


def main() -> None:
    import torch

    from llmboard.settings import schema_default
    from llmboard.tasks.definitions import load_task

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", nargs="+", default=["arc_easy", "hellaswag"])
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--work", type=Path, default=REPO / "bench" / "out")
    args = ap.parse_args()
    torch.set_num_threads(schema_default("inference", "threads"))
    model_dir = ensure_model(args.work)
    for name in args.tasks:
        task = load_task(REPO / "tasks" / f"{name}.yaml", {"limit": args.limit})
        ref = _llmboard(model_dir, task, "fp32", invariant=False)
        chars = ref["chars"]
        runs = {
            "llmboard packed": _llmboard(model_dir, task, "bf16", invariant=False)["lls"],
            "llmboard invariant": _llmboard(model_dir, task, "bf16", invariant=True)["lls"],
        }
        with tempfile.TemporaryDirectory() as work:
            runs["lm-eval batch 8"] = run_lmeval(model_dir, task, "bf16", 8, Path(work))["lls"]
        ref_picks = picks(ref["lls"], chars)
        print(f"{name} ({args.limit} documents, {len(ref['lls'])} requests), bf16 vs fp32:")
        for label, lls in runs.items():
            d = [abs(lls[k] - ref["lls"][k]) for k in ref["lls"]]
            p = picks(lls, chars)
            flips = [sum(p[doc][i] != ref_picks[doc][i] for doc in p) for i in (0, 1)]
            print(
                f"    {label:20s} mean |dLL| {statistics.fmean(d):.4f}, median "
                f"{statistics.median(d):.4f}, max {max(d):.3f}; picks unlike fp32: acc "
                f"{flips[0]}, acc_norm {flips[1]}",
                flush=True,
            )


if __name__ == "__main__":
    main()
