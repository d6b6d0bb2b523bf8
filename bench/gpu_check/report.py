"""The output: the printed table and the environment recorded in gpu_check.json."""

from __future__ import annotations

import sys
from dataclasses import asdict

from .common import ABSENT_ON_GPU_MACHINE, Row, Setup


def fmt(v) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, int) and abs(v) >= 2**20:
        return f"{v / 2**20:.0f}MiB"
    return str(v)


def short_figures(figs: dict) -> str:
    # lists and logs for the JSON only
    skip = {"placement", "holders", "jobs", "snakemake_log_tail", "verify_tail"}
    parts = []
    for k, v in figs.items():
        if k in skip:
            continue
        if isinstance(v, dict):
            v = "{" + ", ".join(f"{kk}={fmt(vv)}" for kk, vv in v.items()) + "}"
        parts.append(f"{k}={fmt(v)}")
    return ", ".join(parts)


def table(rows: list[Row]) -> str:
    lines = [f"{'#':<2} {'status':<8} {'check':<48} figures / target"]
    for r in rows:
        lines.append(f"{r.check:<2} {r.status:<8} {r.name:<48} {short_figures(r.figures)}")
        extra = "; ".join(x for x in (r.note, f"target: {r.target}" if r.target else "") if x)
        if extra:
            lines.append(f"{'':<60} {extra}")
    return "\n".join(lines)


def environment(setup: Setup, wheels: list[str]) -> dict:
    import accelerate
    import torch
    import transformers

    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "device": torch.cuda.get_device_name(0) if setup.cuda else "cpu",
        "gpu_memory_gb": setup.gpu_memory_gb,
        "models": [asdict(m) for m in setup.models],
        "token_budget": setup.budget,
        "requests": len(setup.requests),
        "fewshot_requests": len(setup.fewshot),
        "generation_prompts": len(setup.generation),
        "contexts": len(set(setup.groups)),
        "wheels_activated": wheels,
        "bitsandbytes": setup.bnb or "imports",
        # must stay empty but for bitsandbytes when int8/nf4 ran
        "absent_packages_imported": [m for m in ABSENT_ON_GPU_MACHINE if m in sys.modules],
    }
    if "bitsandbytes" in sys.modules:
        env["bitsandbytes_version"] = sys.modules["bitsandbytes"].__version__
    return env
