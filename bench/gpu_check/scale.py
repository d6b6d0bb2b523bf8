"""Check 10 (scale, #30 item 2): a 7B-class shape in bf16, int8 and nf4.

Qwen2-7B's layers (hidden 3,584, 28 layers, 28 query and 4 key/value heads, MLP 18,944,
untied head) with SmolLM2's 49,152-token vocabulary (the only tokenizer the kit
carries: the head is a third of Qwen2-7B's), random weights built on the GPU machine.
Per precision: log-likelihood tokens per second through the engine and the model FLOPs
utilisation of its transformer body against the GPU's dense bf16 peak; generation
tokens per second and the share of the GPU's memory bandwidth its decoding steps use
(each step reads every weight); torch's peak memory against the memory plan. On the CPU
the tiny Qwen2 shape runs the same code, for figures only.
"""

from __future__ import annotations

import math
import shutil

from .common import MODELS, QUANT, Row, Setup, Timer, failed, skipped, speed, verdict
from .generation import engine_generate
from .models import free_memory, load, run_engine, save_random_model
from .plan import PLAN_RATIO

SCALE_MODEL = {"cuda": "qwen2-7b", "cpu": "tiny-qwen2"}
SCALE_PRECISIONS = ("bf16", *QUANT)
# dense (no sparsity) bf16 tensor-core FLOP/s and HBM bytes/s, NVIDIA's data sheets, by
# a part of torch.cuda.get_device_name()
GPU_PEAKS = {
    "H100 PCIe": (756e12, 2.0e12),
    "H100": (989e12, 3.35e12),  # SXM5, "NVIDIA H100 80GB HBM3"
    "H200": (989e12, 4.8e12),
}


def gpu_peaks(name: str) -> tuple[float, float] | None:
    return next((v for k, v in GPU_PEAKS.items() if k in name), None)


def body_parameters(model) -> int:
    """Parameters every token multiplies: all but the embedding and the output head (the
    engine computes the head only at scored positions)."""
    skip = {
        id(p)
        for m in (model.get_input_embeddings(), model.get_output_embeddings())
        for p in m.parameters()
    }
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def scale_rows(setup: Setup) -> list[Row]:
    import torch

    spec = MODELS[SCALE_MODEL[setup.device]]
    folder = setup.work / spec.name
    with Timer(setup.timings, f"{spec.name} build"):
        save_random_model(spec, setup.tokenizer_dir, folder, setup.device)
    peaks = gpu_peaks(torch.cuda.get_device_name(0)) if setup.cuda else None
    rows, body = [], None
    for p in SCALE_PRECISIONS:
        name = f"scale/{spec.name}/{p}"
        if p in QUANT and setup.bnb is not None:
            rows.append(skipped("scale", name, setup.bnb))
            continue
        try:
            with Timer(setup.timings, f"{spec.name} scale {p}"):
                model, tok, _ = load(folder, p)
                body = body or body_parameters(model)  # bf16 first: quantized counts pack
                ll = run_engine(model, tok, setup.requests, setup.budget)
                _, gen_s, stats = engine_generate(model, tok, setup.generation, setup.budget)
            rows.append(_row(setup, spec, folder, p, ll, gen_s, stats, body, peaks))
        except Exception as e:
            rows.append(failed("scale", name, RuntimeError(f"{type(e).__name__}: {e}")))
        finally:
            model = tok = None
            free_memory()
    shutil.rmtree(folder, ignore_errors=True)  # 14 GB at 7B
    return rows


def _row(setup, spec, folder, p, ll, gen_s, stats, body, peaks) -> Row:
    from llmboard.inference.memory_plan import plan_memory

    generated = stats.get("generated_tokens", 0)
    figs = {
        "loglikelihood": speed(ll, len(setup.requests)),
        "forward_tokens": ll.forward_tokens,
        "body_parameters": body,
        "generation_wall_s": gen_s,
        "generated_tokens": generated,
        "generated_tok_per_s": generated / gen_s,
        "generation_forwards": stats["batches"],
    }
    ok, target = all(math.isfinite(x) for x in ll.ll) and generated > 0, "finite numbers, texts"
    if setup.cuda:
        plan = plan_memory(folder, p, token_budget=setup.budget, gpu_memory_gb=setup.gpu_memory_gb)
        figs |= {
            "measured_resident_bytes": ll.resident_bytes,
            "measured_peak_bytes": ll.peak_bytes,
            "planned_total_bytes": plan.total_bytes,
            "plan_ratio": plan.total_bytes / ll.peak_bytes,
        }
        if peaks:
            flops, bandwidth = peaks
            figs["body_mfu"] = 2 * body * ll.forward_tokens / ll.wall / flops
            # every decoding step (and prefill forward) reads the resident weights once
            figs["decode_bandwidth_share"] = (
                ll.resident_bytes * stats["batches"] / gen_s / bandwidth
            )
        lo, hi = PLAN_RATIO
        ok = ok and lo <= figs["plan_ratio"] <= (hi if p == "bf16" else math.inf)
        target += f"; plan / measured peak in [{lo:g}, {hi:g}] (bf16; quantized: >= {lo:g})"
    return Row(10, f"scale/{spec.name}/{p}", verdict(ok), figs, target)
