"""Check 5 (plan): the memory plan's GPU bytes against torch's measured peak."""

from __future__ import annotations

from pathlib import Path

from .common import ModelSpec, Row, Setup, failed, missing, skipped, verdict
from .models import free_memory, load, run_engine

PLAN_RATIO = (1.0, 1.15)  # planned / measured GPU bytes: never below, at most 15 % above
SWEEP_BUDGETS = (1024, 4096, 16384)


def plan_rows(setup: Setup, spec: ModelSpec, folder: Path, runs: dict, errors: dict) -> list[Row]:
    from llmboard.inference.memory_plan import plan_memory

    rows = []
    for p in ("bf16", "fp32"):
        name = f"memory plan/{spec.name}/{p}"
        if not setup.cuda:
            rows.append(skipped("plan", name, "needs CUDA"))
            continue
        err = missing(runs, errors, [("engine", p)])
        if err:
            rows.append(failed("plan", name, err))
            continue
        run = runs["engine", p]
        plan = plan_memory(folder, p, token_budget=setup.budget, gpu_memory_gb=setup.gpu_memory_gb)
        figs = {
            "token_budget": setup.budget,
            "planned_weight_bytes": plan.weight_bytes,
            "planned_activation_bytes": plan.activation_bytes,
            "planned_total_bytes": plan.total_bytes,
            "planned_gpus": plan.gpus,
            "measured_resident_bytes": run.resident_bytes,
            "measured_peak_bytes": run.peak_bytes,
            "measured_activation_bytes": run.peak_bytes - run.resident_bytes,
            "ratio": plan.total_bytes / run.peak_bytes,
        }
        if p == "bf16":  # the estimate's shape, not one point: what to calibrate it on
            figs["sweep"] = activation_sweep(setup, folder, p)
        lo, hi = PLAN_RATIO
        ok = lo <= figs["ratio"] <= hi
        target = f"{lo:g} <= planned/measured <= {hi:g}"
        rows.append(Row(5, name, verdict(ok), figs, target))
    return rows


def activation_sweep(setup: Setup, folder: Path, precision: str) -> list[dict]:
    """Measured activation peak against the plan's estimate at several token budgets."""
    from llmboard.inference.memory_plan import plan_memory

    model, tok, _ = load(folder, precision)
    out = []
    try:
        for budget in SWEEP_BUDGETS:
            run = run_engine(model, tok, setup.requests, budget)
            out.append(
                {
                    "token_budget": budget,
                    "measured_activation_bytes": run.peak_bytes - run.resident_bytes,
                    "estimated_activation_bytes": plan_memory(
                        folder, precision, token_budget=budget, margin=0.0
                    ).activation_bytes,
                    "measured_peak_bytes": run.peak_bytes,
                    "forward_tokens": run.forward_tokens,
                }
            )
    finally:
        model = tok = None
        free_memory()
    return out
