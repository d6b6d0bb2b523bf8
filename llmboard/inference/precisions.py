"""The precisions llmboard evaluates, and how transformers loads each.

Kept free of torch imports at module level: the Snakefile reads PRECISIONS.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# bytes per parameter for weights at each precision (int8/nf4 keep norms, biases and
# the output head in 16 bit; the memory plan accounts for that separately)
PRECISIONS = {
    "fp32": {"bytes": 4.0, "torch_dtype": "float32"},
    "bf16": {"bytes": 2.0, "torch_dtype": "bfloat16"},
    "fp16": {"bytes": 2.0, "torch_dtype": "float16"},
    "int8": {"bytes": 1.0, "torch_dtype": "bfloat16", "quant": "int8"},
    "nf4": {"bytes": 0.5, "torch_dtype": "bfloat16", "quant": "nf4"},
}
# The reference precision a comparison is made against, best first.
REFERENCE_ORDER = ("fp32", "bf16", "fp16", "int8", "nf4")


class PrecisionError(ValueError):
    pass


def check_precision(name: str) -> dict:
    if name not in PRECISIONS:
        raise PrecisionError(f"unknown precision {name!r}; choose from {sorted(PRECISIONS)}")
    return PRECISIONS[name]


def hardware_warnings(precision: str, on_gpu: bool) -> list[str]:
    """Reasons a precision may be slow or odd on this hardware (logged, never fatal)."""
    import torch

    warnings = []
    if not on_gpu and precision == "fp16":
        warnings.append(
            "fp16 on CPU: most CPUs have no fp16 matmul, so this runs emulated "
            "(measured ~5x slower than fp32 on the reference 2-core CPU)"
        )
    if on_gpu and precision == "bf16" and not torch.cuda.is_bf16_supported():
        warnings.append("bf16 requested on a GPU without native bf16 (pre-Ampere): emulated, slow")
    if precision in ("int8", "nf4") and not on_gpu:
        warnings.append(
            f"{precision} on CPU: bitsandbytes' CPU kernels are correct but not "
            "faster than fp32; use it to measure fidelity, not speed"
        )
    return warnings


def quantization_config(precision: str):
    spec = check_precision(precision)
    quant = spec.get("quant")
    if not quant:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if quant == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
    )


def torch_dtype(precision: str):
    import torch

    return getattr(torch, check_precision(precision)["torch_dtype"])
