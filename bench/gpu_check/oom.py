"""Check 4 (oom): a capped GPU makes the engine halve its token budget; same numbers."""

from __future__ import annotations

from pathlib import Path

from .common import ModelSpec, Row, Setup, Timer, failed, skipped, verdict
from .models import free_memory, load

OOM_TOL = 1e-4  # fp32, same final budget, so the same batches


def oom_rows(setup: Setup, spec: ModelSpec, folder: Path) -> list[Row]:
    name = f"out-of-memory retry/{spec.name}/fp32"
    if not setup.cuda:
        return [skipped("oom", name, "needs CUDA")]
    try:
        with Timer(setup.timings, f"{spec.name} oom"):
            model, tok, _ = load(folder, "fp32")
            figs = forced_oom(model, tok, setup.requests, setup.budget)
    except Exception as e:
        return [failed("oom", name, e)]
    finally:
        model = tok = None
        free_memory()
    ok = (
        figs["oom_retries"] >= 1
        and figs["final_budget"] < figs["start_budget"]
        and figs["max_abs_dll"] <= OOM_TOL
    )
    target = f">= 1 retry, budget halved, max|dLL| <= {OOM_TOL:g} vs uncapped at the final budget"
    return [Row(4, name, verdict(ok), figs, target)]


def forced_oom(model, tok, requests, budget: int) -> dict:
    """Cap this process' GPU memory at the weights plus 2.5 x the activations of a run at a
    quarter of ``budget``, then start the engine at 16 x ``budget``: it must halve its way
    down (about five times) and finish."""
    import torch

    from llmboard.inference.engine import TransformersLM

    small = budget // 4
    free_memory()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    TransformersLM(model, tok, token_budget=small).loglikelihood(requests)
    act = torch.cuda.max_memory_allocated() - base
    free_memory()
    total = torch.cuda.get_device_properties(0).total_memory
    cap = torch.cuda.memory_reserved() + int(2.5 * act)
    start = 64 * small
    torch.cuda.set_per_process_memory_fraction(cap / total)
    try:
        lm = TransformersLM(model, tok, token_budget=start)
        capped = lm.loglikelihood(requests)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    free_memory()
    ref = TransformersLM(model, tok, token_budget=lm.token_budget).loglikelihood(requests)
    return {
        "cap_bytes": cap,
        "small_budget_activation_bytes": act,
        "start_budget": start,
        "final_budget": lm.token_budget,
        "oom_retries": lm.stats["oom_retries"],
        "max_abs_dll": max(abs(a.loglikelihood - b.loglikelihood) for a, b in zip(capped, ref)),
        "greedy_flips": sum(a.is_greedy != b.is_greedy for a, b in zip(capped, ref)),
    }
