"""Benchmark: llmboard's perplexity requests vs lm-eval's ``hf`` model on LAMBADA.

Both request types of lm-eval's perplexity tasks, on the same passages, the same model
(the converted SmolLM2-135M-Instruct), the same dtype, in this process:
``loglikelihood`` (lambada_openai: context + last word) and ``loglikelihood_rolling``
(each whole passage over rolling windows; ``--max-length`` caps the window, so that a
passage spans several). lm-eval's requests come from its own tasks
(``lmeval_oracle.write_lmeval_perplexity_tasks``); llmboard's from its task files. The
two sides run interleaved (lm-eval, llmboard, ...) for ``--rounds`` rounds; each side's
minimum and median are compared. lm-eval first runs once at each of
``--lmeval-batch-sizes``; the fastest is its batch size for the rounds.

    .venv/bin/python -m bench.perplexity --limit 200 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

from bench.engine_vs_lmeval import PRECISION, ensure_model
from lmeval_oracle import write_lmeval_perplexity_tasks

REPO = Path(__file__).resolve().parent.parent


def lmeval_instances(names: list[str], work: Path, limit: int) -> dict[str, list]:
    from lm_eval.tasks import TaskManager, get_task_dict

    tasks = get_task_dict(names, TaskManager(include_path=str(work), include_defaults=False))
    out = {}
    for name in names:
        t = tasks[name]
        t.build_all_requests(limit=limit)
        out[name] = sorted(t.instances, key=lambda i: i.doc_id)
    return out


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--dtype", default="fp32", choices=sorted(PRECISION))
    ap.add_argument("--max-length", type=int, default=64, help="rolling window (tokens)")
    ap.add_argument("--lmeval-batch-sizes", nargs="+", type=int, default=[8, 32])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--token-budget", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench" / "out"))
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "perplexity.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)

    import torch
    from lm_eval.models.huggingface import HFLM

    from llmboard.inference.api import LoglikelihoodRequest
    from llmboard.inference.engine import TransformersLM
    from llmboard.inference.loading import load_model
    from llmboard.tasks.definitions import find_task_files, load_task
    from llmboard.tasks.documents import load_docs
    from llmboard.tasks.prompts import build_loglikelihood_requests, build_rolling_requests

    torch.set_num_threads(args.threads)
    model_dir = ensure_model(Path(args.out))
    index = find_task_files(REPO / "tasks")
    openai = load_task(index["lambada_openai"], {"limit": args.limit})
    rolling = load_task(index["lambada_rolling"], {"limit": args.limit})
    docs = load_docs(openai)
    work = Path(tempfile.mkdtemp())
    names = write_lmeval_perplexity_tasks(docs, work)
    insts = lmeval_instances(list(names), work, args.limit)
    ll_reqs = [
        LoglikelihoodRequest(r["context"], r["continuation"])
        for r in build_loglikelihood_requests(openai, docs)
    ]
    texts = [r["text"] for r in build_rolling_requests(rolling, load_docs(rolling))]
    assert [i.args for i in insts[names[0]]] == [(r.context, r.continuation) for r in ll_reqs]
    assert [i.args[0] for i in insts[names[1]]] == texts

    model, tok, _ = load_model(model_dir, args.dtype)
    lm = TransformersLM(model, tok, token_budget=args.token_budget)
    hflm = HFLM(pretrained=str(model_dir), dtype=PRECISION[args.dtype], batch_size=8, device="cpu")

    def rolling_lmeval():
        # lm-eval's window is its model's max_length: set for these requests only (the
        # loglikelihood requests keep the model's whole window, as in lambada_openai)
        hflm._max_length = args.max_length
        try:
            return hflm.loglikelihood_rolling(insts[names[1]], disable_tqdm=True)
        finally:
            hflm._max_length = None

    sides = {
        "loglikelihood": (
            lambda: lm.loglikelihood(ll_reqs),
            lambda: hflm.loglikelihood(insts[names[0]], disable_tqdm=True),
        ),
        "loglikelihood_rolling": (
            lambda: lm.loglikelihood_rolling(texts, args.max_length),
            rolling_lmeval,
        ),
    }
    results = {}
    for kind, (ours_fn, theirs_fn) in sides.items():
        probe = {}
        for bs in args.lmeval_batch_sizes:
            hflm.batch_size_per_gpu = bs
            probe[bs], _ = timed(theirs_fn)
        best = min(probe, key=probe.get)
        hflm.batch_size_per_gpu = best
        ours_t, theirs_t, max_dll = [], [], 0.0
        for r in range(args.rounds):
            t, theirs = timed(theirs_fn)
            theirs_t.append(t)
            t, ours = timed(ours_fn)
            ours_t.append(t)
            theirs_ll = [x[0] if isinstance(x, tuple) else x for x in theirs]
            max_dll = max(abs(o.loglikelihood - x) for o, x in zip(ours, theirs_ll))
            print(
                f"  {kind} round {r + 1}: lm-eval {theirs_t[-1]:.2f} s, "
                f"llmboard {ours_t[-1]:.2f} s, max |dll| {max_dll:.2e}"
            )
        results[kind] = {
            "requests": len(texts),
            "lmeval_probe_s": probe,
            "lmeval_batch_size": best,
            "lmeval": {"min_s": min(theirs_t), "median_s": statistics.median(theirs_t)},
            "llmboard": {"min_s": min(ours_t), "median_s": statistics.median(ours_t)},
            "ratio_min": min(theirs_t) / min(ours_t),
            "ratio_median": statistics.median(theirs_t) / statistics.median(ours_t),
            "max_abs_dll": max_dll,
        }
        r = results[kind]
        print(
            f"{kind}: lm-eval (batch {best}) min {r['lmeval']['min_s']:.2f} s median "
            f"{r['lmeval']['median_s']:.2f} s; llmboard min {r['llmboard']['min_s']:.2f} s "
            f"median {r['llmboard']['median_s']:.2f} s; ratio {r['ratio_min']:.2f}x (minima), "
            f"{r['ratio_median']:.2f}x (medians)"
        )
    result = {
        "documents": len(texts),
        "dtype": args.dtype,
        "threads": args.threads,
        "max_length": args.max_length,
        "token_budget": args.token_budget,
        **results,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
