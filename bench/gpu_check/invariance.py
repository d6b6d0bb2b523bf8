"""Check 9 (invariance): ``inference.batch_invariant`` on the device. The same requests
(the engine's and check 7's few-shot ones, and check 8's generations) at token budgets
256, 1,024 and 8,192, as one shard and as two: how many log-likelihoods and texts are
bit-identical, in the packed engine and in invariant mode (generating with the job's
``inference.draft_tokens``, which jobs on a GPU do not use until this row shows drafted
texts equal to a token a step's: ``invariant_drafts_identical``), fp32 and bf16, and what
invariant mode costs in time. On the CPU the layout rules make it exact (the row
passes only then); on a GPU the kernels choose tiles and split-K by shape, so the row
measures how far the same rules get there."""

from __future__ import annotations

import time
from pathlib import Path

from .common import ModelSpec, Row, Setup, Timer, verdict
from .models import free_memory, load, sync

BUDGETS = (256, 1024, 8192)


def _layouts(run, items) -> dict:
    half = len(items) // 2
    out = {}
    for b in BUDGETS:
        out[(b, 1)] = run(items, b)
        out[(b, 2)] = run(items[:half], b) + run(items[half:], b)
    return out


def _identical(got: dict) -> tuple[int, int]:
    ref = got[(BUDGETS[0], 1)]
    worst = min(sum(a == b for a, b in zip(ref, v)) for v in got.values())
    return worst, len(ref)


def invariance_rows(setup: Setup, spec: ModelSpec, folder: Path) -> list[Row]:
    from llmboard.inference.engine import TransformersLM
    from llmboard.settings import schema_default

    drafts = schema_default("inference", "draft_tokens")

    rows = []
    # requests of one document stay together when split in two (a shard never splits one)
    requests = setup.requests + setup.fewshot
    for p in ("fp32", "bf16"):
        with Timer(setup.timings, f"{spec.name} invariance {p}"):
            model, tok, _ = load(folder, p)
            figs: dict = {}
            ok = True
            try:
                for mode in ("packed", "invariant"):
                    lm = TransformersLM(
                        model,
                        tok,
                        token_budget=setup.budget,
                        progress_every=1e9,
                        batch_invariant=mode == "invariant",
                        # the job's drafts (invariant mode only; the texts must not move)
                        draft_tokens=drafts if mode == "invariant" else 0,
                    )
                    lm.unchecked_drafts = True  # measured here, on any device

                    def ll(reqs, budget, lm=lm):
                        lm.token_budget = budget
                        return [(r.loglikelihood, r.is_greedy) for r in lm.loglikelihood(reqs)]

                    def gen(reqs, budget, lm=lm):
                        lm.token_budget = budget
                        return [g.text for g in lm.generate_until(reqs)]

                    same, n = _identical(_layouts(ll, requests))
                    figs[f"{mode}_loglikelihood_identical"] = f"{same}/{n}"
                    texts = _layouts(gen, setup.generation)
                    gsame, gn = _identical(texts)
                    figs[f"{mode}_generation_identical"] = f"{gsame}/{gn}"
                    if mode == "invariant":
                        lm.draft_tokens = 0  # a token a step, against the drafted texts
                        plain = gen(setup.generation, BUDGETS[0])
                        lm.draft_tokens = drafts
                        dsame = sum(a == b for a, b in zip(plain, texts[(BUDGETS[0], 1)]))
                        figs["invariant_drafts_identical"] = f"{dsame}/{gn}"
                        ok = same == n and gsame == gn and dsame == gn
                    lm.token_budget = setup.budget
                    sync()
                    t0 = time.perf_counter()
                    lm.loglikelihood(requests)
                    sync()
                    figs[f"{mode}_loglikelihood_s"] = round(time.perf_counter() - t0, 4)
            finally:
                model = tok = None
                free_memory()
        figs["invariant_over_packed_time"] = round(
            figs["invariant_loglikelihood_s"] / figs["packed_loglikelihood_s"], 3
        )
        rows.append(
            Row(
                9,
                f"invariance/{spec.name}/{p}",
                verdict(ok),
                figs,
                "invariant mode: every log-likelihood and text identical at budgets "
                + "/".join(map(str, BUDGETS))
                + " x 1 or 2 shards",
                "" if ok or not setup.cuda else "CUDA kernels choose tiles by shape",
            )
        )
    return rows
