"""Check 1 (engine): TransformersLM against a plain forward pass per request (lm-eval's
way): speed, and log-likelihood agreement (fp32 exactly; bf16 no worse than plain's).
Its runs at each precision (``model_runs``) serve checks 2, 3 and 5 too."""

from __future__ import annotations

from pathlib import Path

from .baselines import run_lmeval
from .common import (
    BF16_ERROR_RATIO,
    FP32_TOL,
    LMEVAL_SPEEDUP,
    ModelSpec,
    Row,
    Setup,
    Timer,
    abs_diffs,
    agrees_with_lmeval,
    beats_lmeval,
    failed,
    greedy_flips,
    lmeval_figures,
    log,
    mean,
    missing,
    speed,
    verdict,
)
from .models import free_memory, load, run_engine, run_plain


def model_runs(setup: Setup, spec: ModelSpec, folder: Path) -> tuple[dict, dict]:
    """Engine (and plain) runs at each precision: ({(kind, precision): Run}, {precision: error})."""
    runs, errors = {}, {}
    for p in setup.engine_precisions():
        with Timer(setup.timings, f"{spec.name} {p}"):
            try:
                model, tok, _ = load(folder, p)
                runs["engine", p] = run_engine(model, tok, setup.requests, setup.budget)
                if p in setup.plain_precisions():
                    runs["plain", p] = run_plain(model, tok, setup.requests)
                    for size in setup.lmeval_batches:
                        runs["lmeval", size, p] = run_lmeval(model, tok, setup.requests, size)
            except Exception as e:  # one precision failing must not hide the others
                log.exception("%s %s", spec.name, p)
                # the text alone: a kept traceback would keep the model's GPU memory
                errors[p] = RuntimeError(f"{type(e).__name__}: {e}")
            finally:
                model = tok = None
                free_memory()
    return runs, errors


def engine_rows(setup: Setup, spec: ModelSpec, runs: dict, errors: dict) -> list[Row]:
    rows = []
    for p in setup.plain_precisions():
        name = f"engine vs plain/{spec.name}/{p}"
        need = [("engine", p), ("plain", p), ("engine", "fp32")]
        err = missing(runs, errors, need + [("lmeval", s, p) for s in setup.lmeval_batches])
        if err:
            rows.append(failed("engine", name, err))
            continue
        eng, pl = runs["engine", p], runs["plain", p]
        n = len(setup.requests)
        figs = {
            "engine": speed(eng, n),
            "plain": speed(pl, n),
            "speedup": pl.wall / eng.wall,
            "engine_forward_tokens": eng.forward_tokens,
            "request_tokens": eng.request_tokens,
            "max_abs_dll": max(abs_diffs(eng.ll, pl.ll)),
            "greedy_flips": greedy_flips(eng.greedy, pl.greedy),
            **lmeval_figures(eng, runs, p, n, setup.lmeval_batches),
        }
        if p == "fp32":
            tol = FP32_TOL[setup.device]
            ok = figs["max_abs_dll"] <= tol and figs["greedy_flips"] == 0
            ok = ok and agrees_with_lmeval(figs, setup.lmeval_batches, tol)
            target = f"max|dLL| <= {tol:g} (plain and lm-eval), no is_greedy flip, speedup >= 1"
        else:  # 16-bit rounding differs with batch shapes: judge both against fp32
            ref = runs["engine", "fp32"].ll
            figs["engine_mean_err_vs_fp32"] = mean(abs_diffs(eng.ll, ref))
            figs["plain_mean_err_vs_fp32"] = mean(abs_diffs(pl.ll, ref))
            ok = figs["engine_mean_err_vs_fp32"] <= (
                BF16_ERROR_RATIO * figs["plain_mean_err_vs_fp32"] + 1e-4
            )
            target = f"engine's mean|dLL| vs fp32 <= {BF16_ERROR_RATIO:g} x plain's, speedup >= 1"
        ok = ok and figs["speedup"] >= 1
        if setup.cuda:  # tiny models on the CPU time overheads, not the work
            ok = ok and beats_lmeval(figs, setup.lmeval_batches)
            target += f", >= {LMEVAL_SPEEDUP:g}x lm-eval batched at {setup.lmeval_batches}"
        rows.append(Row(1, name, verdict(ok), figs, target))
    return rows
