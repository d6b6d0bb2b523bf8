"""Check 7 (prefix): few-shot prompts (MMLU 5-shot's shape: ~600 shared tokens, then a
short question and four answers): the engine computing each shared prefix once against
the same engine without sharing, a plain forward per request and lm-eval's batched
algorithm (baselines.py) at batch 32 and "auto"."""

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
    greedy_flips,
    lmeval_figures,
    mean,
    pick_agreement,
    speed,
    verdict,
)
from .models import free_memory, load, run_engine, run_plain

PREFIX_TOKEN_RATIO = 3.0  # check 7: tokens without sharing / with, at least (MMLU 5-shot: ~6)


def prefix_rows(setup: Setup, spec: ModelSpec, folder: Path) -> list[Row]:
    """Few-shot prompts: the engine with prefix sharing, the same engine without it
    (``prefix_groups`` answering "nothing shared"), and a plain forward per request, at
    fp32 and bf16. fp32: sharing changes no number beyond the kernels' order; bf16: its
    error against fp32 no larger than plain's."""
    runs: dict = {}
    for p in ("fp32", "bf16"):
        with Timer(setup.timings, f"{spec.name} prefix {p}"):
            model, tok, _ = load(folder, p)
            try:
                runs["shared", p] = run_engine(model, tok, setup.fewshot, setup.budget)
                runs["unshared", p] = run_engine(
                    model, tok, setup.fewshot, setup.budget, sharing=False
                )
                runs["plain", p] = run_plain(model, tok, setup.fewshot)
                for size in setup.lmeval_batches:
                    runs["lmeval", size, p] = run_lmeval(model, tok, setup.fewshot, size)
            finally:
                model = tok = None
                free_memory()
    rows = []
    for p in ("fp32", "bf16"):
        sh, un, pl = runs["shared", p], runs["unshared", p], runs["plain", p]
        n = len(setup.fewshot)
        figs = {
            "shared": speed(sh, n),
            "unshared": speed(un, n),
            "plain": speed(pl, n),
            "speedup_vs_unshared": un.wall / sh.wall,
            "speedup_vs_plain": pl.wall / sh.wall,
            "forward_tokens_shared": sh.forward_tokens,
            "forward_tokens_unshared": un.forward_tokens,
            "request_tokens": sh.request_tokens,
            "max_abs_dll_vs_plain": max(abs_diffs(sh.ll, pl.ll)),
            "max_abs_dll_vs_unshared": max(abs_diffs(sh.ll, un.ll)),
            "greedy_flips": greedy_flips(sh.greedy, pl.greedy),
            **lmeval_figures(sh, runs, p, n, setup.lmeval_batches),
        }
        token_ratio = un.forward_tokens / sh.forward_tokens
        figs["token_ratio"] = token_ratio
        ok = token_ratio >= PREFIX_TOKEN_RATIO
        target = f"tokens unshared/shared >= {PREFIX_TOKEN_RATIO:g}"
        if setup.cuda:  # tiny models on the CPU time overheads, not the work saved
            ok = (
                ok and figs["speedup_vs_unshared"] >= 1 and beats_lmeval(figs, setup.lmeval_batches)
            )
            target += f", faster than unshared, >= {LMEVAL_SPEEDUP:g}x lm-eval batched"
        if p == "fp32":
            tol = FP32_TOL[setup.device]
            ok = ok and figs["max_abs_dll_vs_plain"] <= tol and figs["greedy_flips"] == 0
            ok = ok and agrees_with_lmeval(figs, setup.lmeval_batches, tol)
            target += f", max|dLL| vs plain and lm-eval <= {tol:g}, no is_greedy flip"
        else:
            ref = runs["plain", "fp32"].ll
            figs["shared_mean_err_vs_fp32"] = mean(abs_diffs(sh.ll, ref))
            figs["plain_mean_err_vs_fp32"] = mean(abs_diffs(pl.ll, ref))
            figs["pick_agreement_vs_fp32"] = pick_agreement(sh.ll, ref, setup.fewshot_groups)
            ok = ok and figs["shared_mean_err_vs_fp32"] <= (
                BF16_ERROR_RATIO * figs["plain_mean_err_vs_fp32"] + 1e-4
            )
            target += f", mean|dLL| vs fp32 <= {BF16_ERROR_RATIO:g} x plain's"
        rows.append(Row(7, f"prefix sharing/{spec.name}/{p}", verdict(ok), figs, target))
    return rows
