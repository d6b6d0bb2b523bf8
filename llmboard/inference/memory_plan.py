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
from dataclasses import dataclass
from functools import lru_cache
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


class PlanDoesNotFit(RuntimeError):
    """No placement of the model fits the GPUs a job may hold; the message says why."""


def weight_bytes(parameters: int, layer_matrix_parameters: int, precision: str) -> int:
    spec = check_precision(precision)
    if precision in QUANT_BYTES:
        # quantised layer matrices + the rest (embeddings, norms, head) in 16 bit
        return int(
            layer_matrix_parameters * QUANT_BYTES[precision]
            + (parameters - layer_matrix_parameters) * 2
        )
    return int(parameters * spec["bytes"])


def mlp_width(arch: dict, per_layer: dict) -> int:
    """The MLP's intermediate width, from one decoder layer's parameter count.

    Manifests record the layer sizes, not ``intermediate_size``: a gated MLP holds
    3 x hidden x width parameters, attention 2 x hidden^2 (q, o) + 2 x hidden x kv width.
    """
    hidden = int(arch.get("hidden_size") or 4096)
    heads = int(arch.get("num_attention_heads") or 32)
    kv_heads = int(arch.get("num_key_value_heads") or heads)
    layers = [n for k, n in per_layer.items() if k != "other"]
    if not layers:
        return 4 * hidden
    attention = 2 * hidden * hidden + 2 * hidden * (hidden * kv_heads // heads)
    return max(hidden, (max(layers) - attention - 2 * hidden) // (3 * hidden))


def activation_bytes(arch: dict, intermediate: int, token_budget: int, precision: str) -> int:
    """GPU activations at the peak of one batch of ``token_budget`` tokens.

    Measured on an H100 (bench/gpu_check/, check 5's sweep over budgets 1k-16k, two
    shapes, bf16 and fp32): the peak is linear in the budget at about
    (5 x hidden + 3 x MLP width) values per token in the compute dtype, within 3-5 %.
    That is one layer's residual, normed input, attention output and the gated MLP's
    three intermediates; the attention scores never materialise (SDPA's fused kernels
    take the tree mask) and the vocabulary logits of the scored positions are a few
    percent on top (multiple-choice continuations).
    """
    hidden = int(arch.get("hidden_size") or 4096)
    act_dtype = 4 if precision == "fp32" else 2
    return int(token_budget * (5 * hidden + 3 * intermediate) * act_dtype)


def cpu_attention_bytes(arch: dict, token_budget: int) -> int:
    """On the CPU, attention with an explicit mask materialises its scores (float32,
    budget x width per head, one layer at a time; width ~2k tokens at most here)."""
    heads = int(arch.get("num_attention_heads") or 32)
    return int(token_budget * min(token_budget, 2048) * heads * 4)


def _arch_and_counts(source: str | Path) -> tuple[dict, int, int, dict]:
    """(architecture, parameters, layer matrix parameters, parameters per layer)
    from a converted model folder (its manifest) or a bare config.json."""
    source = Path(source)
    manifest = source / "manifest.json"
    if source.is_dir() and manifest.exists():
        return _manifest_counts(str(manifest), manifest.stat().st_mtime_ns)
    cfg = source / "config.json" if source.is_dir() else source
    return config_counts(cfg)


@lru_cache(maxsize=256)
def _manifest_counts(path: str, mtime_ns: int) -> tuple[dict, int, int, dict]:
    # cached per file version: the Snakefile plans every inference job of a model
    # (memory and GPUs, thousands of jobs) from the same manifest
    m = json.loads(Path(path).read_text())
    return (
        m["architecture"],
        m["parameters"],
        m.get("layer_matrix_parameters", m["parameters"]),
        m.get("parameters_per_layer", {"other": m["parameters"]}),
    )


def config_counts(config_json: str | Path) -> tuple[dict, int, int, dict]:
    """Count parameters by building the model on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..checkpoints.manifest import layer_of

    config = AutoConfig.from_pretrained(str(config_json))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = matrix = 0
    per_layer: dict[str, int] = {}
    seen = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:  # tied weights count once, as in the safetensors file
            continue
        seen.add(id(p))
        params += p.numel()
        per_layer[layer_of(name)] = per_layer.get(layer_of(name), 0) + p.numel()
        if layer_of(name) != "other" and p.dim() == 2:
            matrix += p.numel()
    text = getattr(config, "text_config", config)
    arch = {
        "model_type": config.model_type,
        "hidden_size": text.hidden_size,
        "vocab_size": text.vocab_size,
        "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": getattr(text, "num_key_value_heads", None)
        or text.num_attention_heads,
        "num_hidden_layers": text.num_hidden_layers,
    }
    return arch, params, matrix, per_layer


def _block_bytes(per_layer: dict, params: int, matrix: int, precision: str) -> list[int]:
    """Bytes of each unit accelerate will not split: embeddings/head, then each decoder layer."""
    layers = {k: v for k, v in per_layer.items() if k != "other"}
    layer_params = sum(layers.values()) or 1
    blocks = []
    for name, n in [
        ("other", per_layer.get("other", 0)),
        *sorted(layers.items(), key=lambda kv: int(kv[0].split(".")[1])),
    ]:
        if name == "other":
            blocks.append(weight_bytes(n, 0, precision))
        else:  # this layer's share of the quantised matrices
            blocks.append(weight_bytes(n, int(matrix * n / layer_params), precision))
    return blocks


def gpus_needed(blocks: list[int], activation: int, gpu_bytes: float, reserve: int) -> int:
    """Fill GPUs in order with whole blocks, as accelerate's sequential placement does.

    Every GPU keeps a reserve for the CUDA context; GPU 0 also holds the activations
    and, as accelerate's ``infer_auto_device_map`` does on its main device, room for
    the largest block (embeddings/head count as two halves: they are separate modules).
    """
    largest = max([*blocks[1:], blocks[0] // 2] if len(blocks) > 1 else blocks)
    gpus, free = 1, gpu_bytes - reserve - activation - largest
    if free <= 0:
        return -1
    for b in blocks:
        if b > gpu_bytes - reserve:
            return -1  # one block larger than a GPU: cannot be placed at all
        if b > free:
            gpus += 1
            free = gpu_bytes - reserve
        free -= b
    return gpus


CUDA_RESERVE_BYTES = 1 * GiB  # CUDA context, cuBLAS workspace, allocator fragmentation
# torch allocates cuBLAS's workspace through its caching allocator, so it counts in the
# bytes a job allocates: 32 MiB on Hopper (measured: resident = weights + 32-33 MiB)
CUBLAS_WORKSPACE_BYTES = 32 * 2**20


# activation estimates are rough; jobs are planned with this much on top
JOB_MARGIN = 0.25


def plan_memory(
    source,
    precision: str,
    *,
    token_budget: int,
    model: str = "?",
    gpu_memory_gb: float | None = None,
    margin: float = JOB_MARGIN,
    max_gpus: int | None = None,
) -> MemoryPlan:
    """Weights are exact (from the headers); the margin covers activation estimates."""
    arch, params, matrix, per_layer = _arch_and_counts(source)
    w = weight_bytes(params, matrix, precision)
    a = int(activation_bytes(arch, mlp_width(arch, per_layer), token_budget, precision))
    a = int(a * (1 + margin))
    # on a GPU: what torch allocates there at the peak; on the CPU: weights + activations
    total = w + a + (CUBLAS_WORKSPACE_BYTES if gpu_memory_gb else 0)
    if gpu_memory_gb:
        blocks = _block_bytes(per_layer, params, matrix, precision)
        gpus = gpus_needed(blocks, a, gpu_memory_gb * GiB, CUDA_RESERVE_BYTES)
        if gpus < 0 or (max_gpus is not None and gpus > max_gpus):
            need = max(1, math.ceil(total / (gpu_memory_gb * GiB - CUDA_RESERVE_BYTES)))
            raise PlanDoesNotFit(
                f"{model} at {precision} needs {total / GiB:.1f} GiB = {need} x {gpu_memory_gb:g} GB "
                f"GPUs, but at most {max_gpus if max_gpus is not None else 'a whole layer per'} "
                f"{'are available (resources.max_gpus_per_job)' if max_gpus is not None else 'GPU fits'}"
            )
    else:
        gpus = 0
    # host: on GPU, loading streams shards through host memory; on CPU it holds the model
    if gpus:
        host = HOST_BASE_BYTES + int(w * 0.25)
    else:
        host = HOST_BASE_BYTES + w + a + cpu_attention_bytes(arch, token_budget)
    arithmetic = (
        f"weights {params:,} params -> {w / GiB:.2f} GiB at {precision}"
        f" + activations {a / GiB:.2f} GiB (budget {token_budget} tokens,"
        f" +{margin:.0%} margin)"
        + (f" + cuBLAS workspace {CUBLAS_WORKSPACE_BYTES / 2**20:.0f} MiB" if gpu_memory_gb else "")
        + f" = {total / GiB:.2f} GiB"
    )
    if gpu_memory_gb:
        arithmetic += (
            f"; whole layers packed into {gpu_memory_gb:g} GB GPUs, each keeping "
            f"{CUDA_RESERVE_BYTES / GiB:g} GiB for CUDA -> {gpus} GPU(s)"
        )
    return MemoryPlan(
        model,
        precision,
        params,
        w,
        a,
        margin,
        total,
        gpu_memory_gb,
        gpus,
        math.ceil(host / 2**20),
        arithmetic,
    )


def job_mem_mb(
    model_dir,
    precision: str,
    *,
    token_budget: int,
    gpu_memory_gb: float | None,
    default_mem_mb: int,
) -> int:
    """``mem_mb`` for an inference job; before conversion (no manifest yet), the default."""
    if not (Path(model_dir) / "manifest.json").exists():
        return default_mem_mb
    return plan_memory(
        model_dir, precision, token_budget=token_budget, gpu_memory_gb=gpu_memory_gb
    ).host_mem_mb


def job_gpus(
    model_dir,
    precision: str,
    *,
    token_budget: int,
    gpu_memory_gb: float | None,
    max_gpus: int | None,
) -> int:
    """GPUs an inference job asks for: 0 on a CPU run, 1 before conversion."""
    if not gpu_memory_gb:
        return 0
    if not (Path(model_dir) / "manifest.json").exists():
        return 1
    return plan_memory(
        model_dir,
        precision,
        token_budget=token_budget,
        gpu_memory_gb=gpu_memory_gb,
        max_gpus=max_gpus,
    ).gpus
