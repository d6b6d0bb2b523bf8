"""Benchmark: generation with prompt-lookup drafts (``inference.draft_tokens``) against
one token a step, on the same engine, model, documents and dtype, in one process,
interleaved (each ``--drafts`` value in turn) for ``--rounds`` rounds; minimum and
median of each, the ratio to ``--drafts``' first value, the drafts proposed and kept,
and whether every text, token count and stop reason equals the first value's.

    .venv/bin/python -m bench.drafts --task gsm8k_cot --limit 24 --drafts 0 2 4 8
    .venv/bin/python -m bench.drafts --task minerva_math_algebra --limit 16 --dtype bf16

The prompts are lm-eval's own task on the repository's documents (as bench.generation),
through ``TransformersLM`` as a job builds it (batch-invariant: drafts need it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

from bench.generation import workload, workload_arguments, workload_record

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    workload_arguments(ap, limit=24)
    ap.add_argument("--drafts", nargs="+", type=int, default=[0, 4])
    ap.add_argument("--json", default=None, help="default: bench/results/drafts-TASK-DTYPE.json")
    args = ap.parse_args()

    from llmboard.inference.api import LoadOptions
    from llmboard.inference.engine import GenerationRequest, engine_for
    from llmboard.inference.loading import load_model
    from llmboard.settings import InferenceSettings

    model_dir, dicts, _ = workload(args)
    reqs = [GenerationRequest(r["context"], tuple(r["until"]), r["max_gen_toks"]) for r in dicts]
    model, tok, _ = load_model(model_dir, args.dtype)
    job = LoadOptions.of(InferenceSettings.defaults())
    lm = engine_for(model, tok, replace(job, token_budget=args.token_budget, batch_invariant=True))
    print(f"{args.task}: {len(reqs)} documents, {args.dtype}, {args.threads} threads")

    times: dict[int, list[float]] = {k: [] for k in args.drafts}
    counts: dict[int, dict] = {}
    ref, identical, tokens = None, True, 0
    for r in range(args.rounds):
        for k in args.drafts:
            lm.draft_tokens = k
            for key in ("drafted_tokens", "kept_draft_tokens"):
                lm.stats.pop(key, None)
            t = time.perf_counter()
            out = lm.generate_until(reqs)
            times[k].append(time.perf_counter() - t)
            got = [(g.text, g.tokens, g.stop_reason) for g in out]
            ref = ref or got
            same = sum(a == b for a, b in zip(got, ref))
            identical &= same == len(reqs)
            tokens = sum(g.tokens for g in out)
            counts[k] = {
                "proposed": lm.stats.get("drafted_tokens", 0),
                "kept": lm.stats.get("kept_draft_tokens", 0),
            }
            print(
                f"  round {r + 1}, drafts {k}: {times[k][-1]:.1f} s, {same}/{len(reqs)} "
                f"identical, drafts proposed {counts[k]['proposed']}, kept {counts[k]['kept']}",
                flush=True,
            )
    base = args.drafts[0]
    result = {
        **workload_record(args, len(reqs)),
        "generated_tokens": tokens,
        "identical": identical,
        "runs": {
            k: {
                "min_s": min(ts),
                "median_s": statistics.median(ts),
                "runs_s": ts,
                "speedup_min": min(times[base]) / min(ts),
                "speedup_median": statistics.median(times[base]) / statistics.median(ts),
                **counts[k],
            }
            for k, ts in times.items()
        },
    }
    for k, v in result["runs"].items():
        print(
            f"drafts {k}: min {v['min_s']:.1f} s, median {v['median_s']:.1f} s, "
            f"{v['speedup_min']:.2f}x / {v['speedup_median']:.2f}x against drafts {base}"
        )
    print(f"texts identical: {identical}")
    name = f"drafts-{args.task}-{args.dtype}.json"
    out = Path(args.json or REPO / "bench" / "results" / name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
