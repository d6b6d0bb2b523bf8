"""Benchmark: llmboard's generate_until vs lm-eval's ``hf`` model on a generation task
(gsm8k_cot, triviaqa, nq_open, minerva_math_algebra, humaneval, mbpp).

Same model (the converted SmolLM2-135M-Instruct), same documents, same dtype, same
prompts (lm-eval's own gsm8k-cot task on our documents), both in this process. This
machine's speed drifts several-fold within minutes, so the two sides run interleaved
(lm-eval, llmboard, lm-eval, llmboard, ...) for ``--rounds`` rounds, and each side's
minimum and median are compared. lm-eval first gets one run at each of
``--lmeval-batch-sizes``; the fastest is its batch size for the rounds. Generated
tokens/s counts the tokens of the kept generations (llmboard's count: the texts are
the same), not the tokens lm-eval computes past a row's stop while its batch finishes.

    .venv/bin/python -m bench.generation --limit 32 --rounds 3
    .venv/bin/python -m bench.generation --task minerva_math_algebra --limit 16
    .venv/bin/python -m bench.generation --limit 16 --rounds 0 --profile

llmboard's engine is config.yaml's default (``inference.batch_invariant``; ``--packed``
for the packed engine; ``inference.draft_tokens``, ``--draft-tokens 0`` for none).
``--profile`` adds one llmboard run under torch's profiler and prints where its time
goes, operator by operator (self CPU time).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.engine_vs_lmeval import PRECISION, ensure_model
from lmeval_oracle import ORACLE, ORACLE_MATH_CODE, lmeval_generation_task

REPO = Path(__file__).resolve().parent.parent


def run_llmboard(lm, reqs):
    from llmboard.inference.engine import GenerationRequest

    t = time.perf_counter()
    out = lm.generate_until(
        [GenerationRequest(r["context"], tuple(r["until"]), r["max_gen_toks"]) for r in reqs]
    )
    return time.perf_counter() - t, [g.text for g in out], sum(g.tokens for g in out)


def run_lmeval(hflm, instances, batch_size):
    hflm.batch_size_per_gpu = batch_size  # the attribute behind HFLM.batch_size
    t = time.perf_counter()
    out = hflm.generate_until(instances, disable_tqdm=True)
    return time.perf_counter() - t, out


def profile(lm, reqs) -> None:
    """One llmboard run under torch's profiler: operators by self CPU time."""
    import torch

    run_llmboard(lm, reqs[:2])  # warm-up
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t, _, tokens = run_llmboard(lm, reqs)
    print(f"profiled run: {t:.1f} s (profiler included), {tokens} generated tokens")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def workload_arguments(ap, limit: int) -> None:
    """The arguments that choose a generation workload (``workload``)."""
    from llmboard.settings import schema_default

    ap.add_argument("--task", default="gsm8k_cot", choices=[*ORACLE, *ORACLE_MATH_CODE])
    ap.add_argument("--limit", type=int, default=limit)
    ap.add_argument("--dtype", default="fp32", choices=sorted(PRECISION))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--token-budget", type=int, default=schema_default("inference", "token_budget"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench" / "out"))


def workload(args):
    """(model directory, request dicts, lm-eval's task): lm-eval's own task on the
    repository's documents, torch at ``--threads``."""
    import torch

    from llmboard.tasks.documents import fewshot_pool
    from llmboard.tasks.prompts import build_generation_requests

    torch.set_num_threads(args.threads)
    model_dir = ensure_model(Path(args.out))
    task, docs, lt = lmeval_generation_task(args.task, Path(tempfile.mkdtemp()), args.limit)
    return model_dir, build_generation_requests(task, docs, pool=fewshot_pool(task)), lt


def workload_record(args, documents: int) -> dict:
    """What a result file says of its workload."""
    keys = ("task", "dtype", "threads", "token_budget")
    return {"documents": documents, **{k: getattr(args, k) for k in keys}}


def main() -> None:
    from llmboard.settings import schema_default

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    workload_arguments(ap, limit=32)
    ap.add_argument("--lmeval-batch-sizes", nargs="+", type=int, default=[8, 16, 32])
    ap.add_argument("--json", default=None, help="default: bench/results/generation-TASK.json")
    ap.add_argument("--packed", action="store_true", help="batch_invariant: false")
    ap.add_argument("--draft-tokens", type=int, default=schema_default("inference", "draft_tokens"))
    ap.add_argument("--max-gen-toks", type=int, default=None, help="default: the task's")
    ap.add_argument("--profile", action="store_true", help="profile one llmboard run")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)

    from lm_eval.models.huggingface import HFLM

    from llmboard.inference.api import LoadOptions
    from llmboard.inference.engine import engine_for
    from llmboard.inference.loading import load_model
    from llmboard.settings import InferenceSettings

    model_dir, reqs, lt = workload(args)
    instances = sorted(lt.instances, key=lambda i: i.doc_id)
    assert [i.args[0] for i in instances] == [r["context"] for r in reqs]
    model, tok, _ = load_model(model_dir, args.dtype)
    job = LoadOptions.of(InferenceSettings.defaults())
    invariant = job.batch_invariant and not args.packed
    options = replace(
        job,
        token_budget=args.token_budget,
        batch_invariant=invariant,
        draft_tokens=args.draft_tokens,
    )
    lm = engine_for(model, tok, options)
    if args.max_gen_toks:
        reqs = [{**r, "max_gen_toks": args.max_gen_toks} for r in reqs]
        for i in instances:
            i.args[1]["max_gen_toks"] = args.max_gen_toks
    if args.profile:
        profile(lm, reqs)
        if not args.rounds:
            return
    hflm = HFLM(pretrained=str(model_dir), dtype=PRECISION[args.dtype], batch_size=8, device="cpu")

    engine = "invariant" if invariant else "packed"
    print(f"{args.task}: {len(reqs)} documents, {args.dtype}, {args.threads} threads, {engine}")
    probe = {}
    if len(args.lmeval_batch_sizes) > 1:  # one run at each size: the fastest is lm-eval's
        for bs in args.lmeval_batch_sizes:
            probe[bs], _ = run_lmeval(hflm, instances, bs)
            print(f"  lm-eval batch {bs}: {probe[bs]:.1f} s")
    best = min(probe, key=probe.get) if probe else args.lmeval_batch_sizes[0]

    ours_t, theirs_t = [], []
    identical = True
    tokens = 0
    for r in range(args.rounds):
        t, theirs = run_lmeval(hflm, instances, best)
        theirs_t.append(t)
        t, texts, tokens = run_llmboard(lm, reqs)
        ours_t.append(t)
        same = sum(a == b for a, b in zip(texts, theirs))
        identical &= same == len(reqs)
        print(
            f"  round {r + 1}: lm-eval {theirs_t[-1]:.1f} s, llmboard {ours_t[-1]:.1f} s, "
            f"{same}/{len(reqs)} identical"
        )

    def summary(ts):
        return {"min_s": min(ts), "median_s": statistics.median(ts), "runs_s": ts}

    result = {
        **workload_record(args, len(reqs)),
        "batch_invariant": invariant,
        "draft_tokens": args.draft_tokens,
        "generated_tokens": tokens,
        "lmeval_probe_s": probe,
        "lmeval_batch_size": best,
        "lmeval": summary(theirs_t),
        "llmboard": summary(ours_t),
        "ratio_min": min(theirs_t) / min(ours_t),
        "ratio_median": statistics.median(theirs_t) / statistics.median(ours_t),
        "identical": identical,
        "engine_stats": lm.stats,
    }
    print(
        f"lm-eval (batch {best}): min {min(theirs_t):.1f} s, median "
        f"{statistics.median(theirs_t):.1f} s, "
        f"{tokens / statistics.median(theirs_t):.1f} generated tokens/s\n"
        f"llmboard: min {min(ours_t):.1f} s, median {statistics.median(ours_t):.1f} s, "
        f"{tokens / statistics.median(ours_t):.1f} generated tokens/s\n"
        f"ratio: {result['ratio_min']:.2f}x (minima), {result['ratio_median']:.2f}x (medians); "
        f"outputs identical: {identical}"
    )
    out = Path(args.json or REPO / "bench" / "results" / f"generation-{args.task}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
