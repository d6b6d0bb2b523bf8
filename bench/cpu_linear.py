"""Benchmark: the engine with its linear layers through oneDNN (reordered weights,
``llmboard/inference/cpu_linear.py``) against PyTorch's default CPU kernels, on the
same model, documents and dtype, in one process, interleaved (torch, oneDNN, torch, ...)
for ``--rounds`` rounds; minimum and median of each side, their ratio, and whether the
two sides' answers agree (generated texts identical; log-likelihoods within the oracle's
1e-4, greedy flags equal).

    .venv/bin/python -m bench.cpu_linear --rounds 3
    .venv/bin/python -m bench.cpu_linear --dtype bf16 --generation-docs 8

First, every linear weight of the model alone (``--product-rows``: a decoding step's
rows, a prompt chunk's), one product after another, torch's ``F.linear`` against oneDNN
on the reordered weight, interleaved; then the engine.

    .venv/bin/python -m bench.cpu_linear --rounds 3 --products-only

Workloads: gsm8k_cot 8-shot generation (``--generation-docs`` documents, the task's
256 tokens and stop strings) and ARC-Easy zero-shot multiple choice
(``--choice-docs`` documents), both through ``TransformersLM`` as a job builds it
(``inference.batch_invariant`` from config.yaml's schema default).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

from bench.engine_vs_lmeval import ensure_model

REPO = Path(__file__).resolve().parent.parent


def workloads(gen_docs: int, choice_docs: int):
    """(generation requests, log-likelihood requests) from the repository's tasks."""
    from llmboard.inference.api import GenerationRequest, LoglikelihoodRequest
    from llmboard.tasks.definitions import load_task
    from llmboard.tasks.documents import fewshot_pool, load_docs
    from llmboard.tasks.prompts import build_generation_requests, build_requests

    gsm = load_task(REPO / "tasks" / "gsm8k_cot.yaml", {"limit": gen_docs})
    gen = [
        GenerationRequest(r["context"], tuple(r["until"]), r["max_gen_toks"])
        for r in build_generation_requests(gsm, load_docs(gsm), pool=fewshot_pool(gsm))
    ]
    arc = load_task(REPO / "tasks" / "arc_easy.yaml", {"limit": choice_docs})
    rows = build_requests(arc, load_docs(arc), pool=fewshot_pool(arc))
    return gen, [LoglikelihoodRequest(r["context"], r["continuation"]) for r in rows]


def time_products(models: dict, rows: list[int], rounds: int) -> dict:
    """Seconds to apply every linear layer of each model (``{"torch": the model as loaded,
    "onednn": packed by cpu_linear.pack_linears}``) to ``rows`` random rows, the two
    interleaved: {rows: {"torch": [s per round], "onednn": [...]}}."""
    import torch

    layers = {
        n: [m for m in model.modules() if type(m) is torch.nn.Linear] for n, model in models.items()
    }
    out: dict = {n: {name: [] for name in models} for n in rows}
    first = layers["torch"]
    with torch.inference_mode():
        for _ in range(rounds):
            for n in rows:
                xs = {
                    k: torch.randn(n, k, dtype=first[0].weight.dtype)
                    for k in {m.in_features for m in first}
                }
                for name, linears in layers.items():
                    t = time.perf_counter()
                    for m in linears:
                        m(xs[m.in_features])
                    out[n][name].append(time.perf_counter() - t)
    return out


def main() -> None:
    from llmboard.settings import schema_default

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--generation-docs", type=int, default=16)
    ap.add_argument("--choice-docs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--token-budget", type=int, default=schema_default("inference", "token_budget"))
    ap.add_argument("--out", default=str(REPO / "bench" / "out"))
    ap.add_argument("--product-rows", nargs="+", type=int, default=[1, 24, 2048])
    ap.add_argument("--products-only", action="store_true", help="skip the engine runs")
    ap.add_argument("--json", default=None, help="default: bench/results/cpu_linear-DTYPE.json")
    args = ap.parse_args()

    import torch

    from llmboard.inference.api import LoadOptions
    from llmboard.inference.cpu_linear import pack_linears
    from llmboard.inference.engine import engine_for
    from llmboard.inference.loading import load_model
    from llmboard.settings import InferenceSettings

    torch.set_num_threads(args.threads)
    model_dir = ensure_model(Path(args.out))
    models = {name: load_model(model_dir, args.dtype)[:2] for name in ("torch", "onednn")}
    pack_linears(models["onednn"][0])
    products = time_products({n: m for n, (m, _) in models.items()}, args.product_rows, args.rounds)
    for n, t in products.items():
        a, b = t["torch"], t["onednn"]
        print(
            f"every linear weight x {n} rows: F.linear {min(a) * 1e3:.1f} / "
            f"{statistics.median(a) * 1e3:.1f} ms, oneDNN reordered {min(b) * 1e3:.1f} / "
            f"{statistics.median(b) * 1e3:.1f} ms: {min(a) / min(b):.2f}x / "
            f"{statistics.median(a) / statistics.median(b):.2f}x (min / median)"
        )
    out = Path(args.json or REPO / "bench" / "results" / f"cpu_linear-{args.dtype}.json")
    if args.products_only:
        out = out.with_name(out.stem + "-products.json")
        out.write_text(json.dumps({"dtype": args.dtype, "products_s": products}, indent=1) + "\n")
        print(f"wrote {out}")
        return
    options = replace(LoadOptions.of(InferenceSettings.defaults()), token_budget=args.token_budget)
    invariant = options.batch_invariant
    engines = {
        name: engine_for(model, tok, options, onednn=name == "onednn", progress_every=1e9)
        for name, (model, tok) in models.items()
    }
    print({n: (lm.numerics, lm.onednn_linears) for n, lm in engines.items()})
    gen, ll = workloads(args.generation_docs, args.choice_docs)
    times: dict = {(w, n): [] for w in ("generation", "choice") for n in engines}
    answers: dict = {}
    for r in range(args.rounds):
        for w, run in (
            ("generation", lambda lm: [g.text for g in lm.generate_until(gen)]),
            ("choice", lambda lm: [(a.loglikelihood, a.is_greedy) for a in lm.loglikelihood(ll)]),
        ):
            for n, lm in engines.items():
                t = time.perf_counter()
                answers[(w, n)] = run(lm)
                times[(w, n)].append(time.perf_counter() - t)
                print(f"round {r + 1} {w} {n}: {times[(w, n)][-1]:.1f} s", flush=True)
    same_texts = sum(
        a == b for a, b in zip(answers[("generation", "torch")], answers[("generation", "onednn")])
    )
    a, b = answers[("choice", "torch")], answers[("choice", "onednn")]
    max_dll = max(abs(x[0] - y[0]) for x, y in zip(a, b))
    greedy_equal = all(x[1] == y[1] for x, y in zip(a, b))
    result = {
        "dtype": args.dtype,
        "threads": args.threads,
        "rounds": args.rounds,
        "batch_invariant": invariant,
        "generation_docs": len(gen),
        "choice_requests": len(ll),
        "times": {f"{w}/{n}": v for (w, n), v in times.items()},
        "texts_identical": f"{same_texts} of {len(gen)}",
        "max_abs_dll": max_dll,
        "greedy_equal": greedy_equal,
        "products_s": products,
    }
    for w in ("generation", "choice"):
        t, o = times[(w, "torch")], times[(w, "onednn")]
        result[f"{w}_ratio_min"] = min(t) / min(o)
        result[f"{w}_ratio_median"] = statistics.median(t) / statistics.median(o)
        print(
            f"{w}: torch {min(t):.1f} / {statistics.median(t):.1f} s, oneDNN {min(o):.1f} / "
            f"{statistics.median(o):.1f} s: {result[f'{w}_ratio_min']:.2f}x / "
            f"{result[f'{w}_ratio_median']:.2f}x (min / median)"
        )
    print(
        f"texts identical {same_texts} of {len(gen)}; max |dLL| {max_dll:.2e}; greedy equal {greedy_equal}"
    )
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
