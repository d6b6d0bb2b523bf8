"""Load a converted model folder at a precision, on the devices a job holds."""

from __future__ import annotations

import logging
import os
import time

from ..checkpoints.manifest import load_manifest
from .api import ModelContext
from .precisions import check_precision, hardware_warnings, quantization_config, torch_dtype

log = logging.getLogger(__name__)


def load_model(
    folder,
    precision: str,
    *,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | None = None,
    trust_remote_code: bool = False,
):
    """Return (model, tokenizer, context); the context records the device map used.

    ``device_map`` "auto"/"balanced" spread layers over the GPUs this process
    sees (``CUDA_VISIBLE_DEVICES``), within ``max_memory``; CPU (and disk, when
    ``offload_folder`` is given) take what does not fit.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.monotonic()
    check_precision(precision)
    on_gpu = torch.cuda.is_available()
    for w in hardware_warnings(precision, on_gpu):
        log.warning("precision %s: %s", precision, w)
    kwargs: dict = {
        "dtype": torch_dtype(precision),
        "trust_remote_code": trust_remote_code,
        "low_cpu_mem_usage": True,
    }
    quant = quantization_config(precision)
    if quant is not None:
        kwargs["quantization_config"] = quant
    if device_map is None:
        if on_gpu or max_memory or offload_folder:
            device_map = "auto"
        elif quant is not None:
            device_map = "cpu"  # bitsandbytes places weights itself; it needs a map
    if device_map is not None:
        kwargs["device_map"] = device_map
    if max_memory:
        kwargs["max_memory"] = max_memory
    if offload_folder:
        os.makedirs(offload_folder, exist_ok=True)
        kwargs["offload_folder"] = offload_folder
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    placement = {
        str(k): str(v)
        for k, v in (
            getattr(model, "hf_device_map", None) or {"": str(next(model.parameters()).device)}
        ).items()
    }
    context = ModelContext(
        str(folder),
        load_manifest(folder)["checkpoint_sha256"],
        precision,
        placement,
        time.monotonic() - t0,
    )
    return model, tok, context
