"""Check 8 (generation): greedy ``generate_until`` (shared exemplars, refilled slots,
cascade attention) against transformers' ``generate`` per prompt and lm-eval's batched,
left-padded ``generate_until`` (baselines.py): same texts."""

from __future__ import annotations

import time
from pathlib import Path

from .baselines import lmeval_generate
from .common import LMEVAL_SPEEDUP, ModelSpec, Row, Setup, Timer, mean, verdict
from .models import device_of, free_memory, load, sync

# check 8: greedy texts equal to transformers' generate in fp32; GPU kernels (cascade
# attention's one softmax against SDPA's) may break a near-tie now and then
GENERATION_SAME = {"cpu": 1.0, "cuda": 0.9}
LMEVAL_GENERATE_BATCH = 32  # lm-eval's generate_until at batch 32, left-padded


def hf_generate(model, tok, requests) -> tuple[list[str], float, int]:
    """transformers' greedy ``generate``, one prompt at a time (no padding), cut as lm-eval
    cuts it: (texts, seconds, tokens generated)."""
    import torch

    from llmboard.inference.engine import encode

    dev = device_of(model)
    eos_text = tok.decode([tok.eos_token_id], skip_special_tokens=False)
    texts, generated = [], 0
    sync()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for r in requests:
            ids = torch.tensor([encode(tok, r.context)], device=dev)
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=r.max_gen_toks,
                do_sample=False,
                pad_token_id=tok.eos_token_id,
            )
            generated += out.shape[1] - ids.shape[1]
            text = tok.decode(out[0, ids.shape[1] :].tolist(), skip_special_tokens=True)
            for u in [*r.until, eos_text]:
                text = text.split(u)[0]
            texts.append(text)
    sync()
    return texts, time.perf_counter() - t0, generated


def engine_generate(model, tok, requests, budget: int) -> tuple[list[str], float, dict]:
    from llmboard.inference.engine import TransformersLM

    TransformersLM(model, tok, token_budget=budget).generate_until(requests[:2])  # warm-up
    lm = TransformersLM(model, tok, token_budget=budget, progress_every=1e9)
    sync()
    t0 = time.perf_counter()
    got = lm.generate_until(requests)
    sync()
    return [g.text for g in got], time.perf_counter() - t0, dict(lm.stats)


def common_chars(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def generation_rows(setup: Setup, spec: ModelSpec, folder: Path) -> list[Row]:
    """fp32: the engine's texts equal ``generate``'s. bf16 (rounding differs with shapes
    either way): the engine's texts stay with fp32's at least as long as ``generate``'s do."""
    reqs = setup.generation
    texts: dict = {}
    figs_by_p: dict = {}
    for p in ("fp32", "bf16"):
        with Timer(setup.timings, f"{spec.name} generation {p}"):
            model, tok, _ = load(folder, p)
            try:
                texts["engine", p], t_eng, stats = engine_generate(model, tok, reqs, setup.budget)
                texts["hf", p], t_hf, n_gen = hf_generate(model, tok, reqs)
                texts["lmeval", p], t_lm, n_lm = lmeval_generate(
                    model, tok, reqs, LMEVAL_GENERATE_BATCH
                )
            finally:
                model = tok = None
                free_memory()
        figs_by_p[p] = {
            "engine_wall_s": t_eng,
            "generate_wall_s": t_hf,
            "speedup": t_hf / t_eng,
            "prompts": len(reqs),
            "generated_tokens": n_gen,
            "prefix_tokens": stats.get("prefix_tokens", 0),
            "same_text": sum(a == b for a, b in zip(texts["engine", p], texts["hf", p])),
            # lm-eval's batched generate: a batch decodes until its last row stops
            "lmeval_generate_wall_s": t_lm,
            "lmeval_generate_batch": LMEVAL_GENERATE_BATCH,
            "lmeval_generated_tokens": n_lm,
            "speedup_vs_lmeval_generate": t_lm / t_eng,
            "same_text_as_lmeval": sum(
                a == b for a, b in zip(texts["engine", p], texts["lmeval", p])
            ),
        }
    rows = []
    f = figs_by_p["fp32"]
    need = GENERATION_SAME[setup.device]
    ok = f["same_text"] >= need * len(reqs) and f["prefix_tokens"] > 0
    ok = ok and f["same_text_as_lmeval"] >= need * len(reqs)
    target = (
        f"same text as generate and as lm-eval's batched generate for >= {need:.0%} of "
        "prompts, shared prefix computed once"
    )
    if setup.cuda:  # tiny models on the CPU time overheads, not the work
        ok = ok and f["speedup_vs_lmeval_generate"] >= LMEVAL_SPEEDUP
        target += f", >= {LMEVAL_SPEEDUP:g}x lm-eval's batched generate"
    rows.append(Row(8, f"generation/{spec.name}/fp32", verdict(ok), f, target))
    f = figs_by_p["bf16"]
    ref = texts["hf", "fp32"]
    f["engine_chars_with_fp32"] = mean(
        [common_chars(a, b) for a, b in zip(texts["engine", "bf16"], ref)]
    )
    f["generate_chars_with_fp32"] = mean(
        [common_chars(a, b) for a, b in zip(texts["hf", "bf16"], ref)]
    )
    ok = f["engine_chars_with_fp32"] >= 0.8 * f["generate_chars_with_fp32"]
    target = "engine's bf16 text agrees with fp32's for >= 0.8 x as many characters as generate's"
    rows.append(Row(8, f"generation/{spec.name}/bf16", verdict(ok), f, target))
    return rows
