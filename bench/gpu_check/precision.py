"""Check 2 (precision): bf16 / fp16 (int8 / nf4 when bitsandbytes imports) against fp32."""

from __future__ import annotations

from .common import (
    CHECK_NUMBER,
    QUANT,
    ModelSpec,
    Row,
    Setup,
    agreement,
    failed,
    missing,
    skipped,
    verdict,
)

# share of contexts whose chosen continuation (max log-likelihood) is fp32's
PICK_AGREEMENT = {"bf16": 0.9, "fp16": 0.9, "int8": 0.85, "nf4": 0.75}


def precision_rows(setup: Setup, spec: ModelSpec, runs: dict, errors: dict) -> list[Row]:
    rows = []
    wanted = []
    if "precision" in setup.checks:
        wanted += ["bf16", "fp16"] if setup.cuda else ["bf16"]
    if "quant" in setup.checks:
        wanted += list(QUANT)
    for p in wanted:
        name = f"{p} vs fp32/{spec.name}"
        check = "quant" if p in QUANT else "precision"
        if p in QUANT and setup.bnb is not None:
            rows.append(skipped(check, name, setup.bnb))
            continue
        err = missing(runs, errors, [("engine", p), ("engine", "fp32")])
        if err:
            rows.append(failed(check, name, err))
            continue
        figs = agreement(runs["engine", p], runs["engine", "fp32"], setup.groups)
        need = PICK_AGREEMENT[p]
        ok = figs["finite"] and figs["pick_agreement"] >= need
        target = f"all finite, same answer picked in >= {need:.0%} of contexts"
        rows.append(Row(CHECK_NUMBER[check], name, verdict(ok), figs, target))
    return rows
