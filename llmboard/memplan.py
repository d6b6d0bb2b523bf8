"""Memory plans: how much a model x precision job needs, from metadata alone.

Weights come from ``manifest.json`` (the safetensors headers) or, before
anything is downloaded, from a ``config.json`` instantiated on the meta device.
int8/nf4 quantise the 2-D weights inside decoder layers; embeddings, norms and
the output head stay 16-bit, as bitsandbytes does. Activations are bounded by
the engine's token budget (no KV cache is kept between batches).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from .precisions import check_precision

GiB = 1024**3
QUANT_BYTES = {"int8": 1.0, "nf4": 0.5}
HOST_BASE_BYTES = int(1.5 * GiB)  # python, torch, tokenizer, datasets


@dataclass
class MemoryPlan:
    model: str
    precision: str
    parameters: int
    weight_bytes: int
    activation_bytes: int
    margin: float
    total_bytes: int
    gpu_memory_gb: float | None
    gpus: int
    host_mem_mb: int
    arithmetic: str

    def as_dict(self) -> dict:
        return asdict(self)


def weight_bytes(parameters: int, layer_matrix_parameters: int, precision: str) -> int:
    spec = check_precision(precision)
    if precision in QUANT_BYTES:
        # quantised layer matrices + the rest (embeddings, norms, head) in 16 bit
        return int(layer_matrix_parameters * QUANT_BYTES[precision]
                   + (parameters - layer_matrix_parameters) * 2)
    return int(parameters * spec["bytes"])


def activation_bytes(arch: dict, token_budget: int, precision: str) -> int:
    """Peak activations for one batch of ``token_budget`` tokens.

    Per token: hidden states and MLP intermediates (~16 x hidden, in the compute
    dtype), plus float32 log-probs over the vocabulary for the scored positions
    (bounded by the budget), plus the attention mask/scores (budget x width, one
    layer at a time; width ~ 2k tokens at most for these tasks).
    """
    hidden = int(arch.get("hidden_size") or 4096)
    vocab = int(arch.get("vocab_size") or 32000)
    heads = int(arch.get("num_attention_heads") or 32)
    act_dtype = 4 if precision == "fp32" else 2
    per_token = 16 * hidden * act_dtype + vocab * 4 * 2
    attn = token_budget * min(token_budget, 2048) * heads * act_dtype
    return int(token_budget * per_token + attn)


def _arch_and_counts(source: str | Path) -> tuple[dict, int, int]:
    """(architecture, parameters, layer matrix parameters) from a model folder or config.json."""
    source = Path(source)
    if source.is_dir() and (source / "manifest.json").exists():
        m = json.loads((source / "manifest.json").read_text())
        return m["architecture"], m["parameters"], m.get("layer_matrix_parameters", m["parameters"])
    cfg = source / "config.json" if source.is_dir() else source
    return config_counts(cfg)


def config_counts(config_json: str | Path) -> tuple[dict, int, int]:
    """Count parameters by building the model on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from .manifest import layer_of

    config = AutoConfig.from_pretrained(str(config_json))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = matrix = 0
    seen = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:  # tied weights count once, as in the safetensors file
            continue
        seen.add(id(p))
        params += p.numel()
        if layer_of(name) != "other" and p.dim() == 2:
            matrix += p.numel()
    text = getattr(config, "text_config", config)
    arch = {"model_type": config.model_type, "hidden_size": text.hidden_size,
            "vocab_size": text.vocab_size, "num_attention_heads": text.num_attention_heads,
            "num_hidden_layers": text.num_hidden_layers}
    return arch, params, matrix


def plan(source, precision: str, *, model: str = "?", token_budget: int = 2048,
         gpu_memory_gb: float | None = None, margin: float = 0.10,
         max_gpus: int | None = None) -> MemoryPlan:
    arch, params, matrix = _arch_and_counts(source)
    w = weight_bytes(params, matrix, precision)
    a = activation_bytes(arch, token_budget, precision)
    total = int((w + a) * (1 + margin))
    if gpu_memory_gb:
        # the layers must fit GPU by GPU: per-GPU capacity is what one card holds
        gpus = max(1, math.ceil(total / (gpu_memory_gb * GiB)))
        if max_gpus is not None and gpus > max_gpus:
            raise MemoryError(
                f"{model} at {precision} needs {total / GiB:.1f} GiB = {gpus} x {gpu_memory_gb:g} GB "
                f"GPUs, but at most {max_gpus} are available (resources.max_gpus_per_job)")
    else:
        gpus = 0
    # host: on GPU, loading streams shards through host memory; on CPU it holds the model
    host = HOST_BASE_BYTES + (int(w * 0.25) if gpus else w + a)
    arithmetic = (f"weights {params:,} params -> {w / GiB:.2f} GiB at {precision}"
                  f" + activations {a / GiB:.2f} GiB (budget {token_budget} tokens)"
                  f" = {(w + a) / GiB:.2f} GiB; x(1+{margin:g} margin) = {total / GiB:.2f} GiB")
    if gpu_memory_gb:
        arithmetic += f"; / {gpu_memory_gb:g} GB per GPU -> {gpus} GPU(s)"
    return MemoryPlan(model, precision, params, w, a, margin, total, gpu_memory_gb, gpus,
                      math.ceil(host / 2**20), arithmetic)


def job_mem_mb(model_dir, precision: str, infer_cfg: dict, config: dict | None = None) -> int:
    """``mem_mb`` for an inference job; before conversion, a configured default."""
    if not (Path(model_dir) / "manifest.json").exists():
        return int(infer_cfg.get("default_mem_mb", 4096))
    gpu = _gpu_cfg(config or {})
    return plan(model_dir, precision, token_budget=int(infer_cfg.get("token_budget", 2048)),
                gpu_memory_gb=gpu.get("gpu_memory_gb")).host_mem_mb


def job_gpus(model_dir, precision: str, config: dict) -> int:
    gpu = _gpu_cfg(config)
    if not gpu.get("gpu_memory_gb"):
        return 0  # CPU-only run
    if not (Path(model_dir) / "manifest.json").exists():
        return 1
    return plan(model_dir, precision, token_budget=int(config.get("inference", {}).get("token_budget", 2048)),
                gpu_memory_gb=gpu["gpu_memory_gb"], max_gpus=gpu.get("max_gpus_per_job")).gpus


def _gpu_cfg(config: dict) -> dict:
    return dict(config.get("resources") or {})
