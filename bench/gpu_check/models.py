"""Random-weight models in real shapes, loaded as the pipeline loads them, and the two ways
of running requests through them: the engine and a plain forward per request."""

from __future__ import annotations

import gc
import json
import math
import shutil
import time
from pathlib import Path

from .common import TOKENIZER_FILES, VOCAB, ModelSpec, Run


def model_config(spec: ModelSpec):
    from transformers import LlamaConfig, Qwen2Config

    cls = LlamaConfig if spec.arch == "llama" else Qwen2Config
    return cls(
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=spec.tied,
        vocab_size=VOCAB,
        bos_token_id=1,
        eos_token_id=2,
    )


def save_random_model(spec: ModelSpec, tokenizer_dir: Path, out: Path, device: str) -> Path:
    """A converted model folder as the pipeline has them: bf16 safetensors (every precision
    then starts from the same weights), config, tokenizer and manifest.json."""
    import torch
    from transformers import AutoModelForCausalLM

    from llmboard.checkpoints.manifest import build_manifest

    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: seconds, not minutes, at 1.5B
        model = AutoModelForCausalLM.from_config(model_config(spec))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(spec.weight_scale)
        model.model.norm.weight.mul_(spec.logit_scale)
    model.to(torch.bfloat16).save_pretrained(out)
    del model
    free_memory()
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, out / name)
    (out / "manifest.json").write_text(json.dumps(build_manifest(out), indent=1))
    return out


def load(folder: Path, precision: str, **kw):
    """The pipeline's loader: device_map "auto" on a GPU, bitsandbytes for int8/nf4."""
    from llmboard.inference.loading import load_model

    model, tok, ctx = load_model(folder, precision, **kw)
    return model, tok, ctx.placement


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def device_of(model):
    """Where a model's inputs go: its first parameter's device that is not "meta"."""
    return next(p.device for p in model.parameters() if p.device.type != "meta")


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- runs
def run_engine(model, tok, requests, budget: int, sharing: bool = True) -> Run:
    """``sharing=False``: every context computed whole (the engine before prefix sharing)."""
    import torch

    from llmboard.inference.engine import TransformersLM
    from llmboard.inference.prefix import MIN_SHARED_TOKENS

    min_shared = MIN_SHARED_TOKENS if sharing else math.inf
    # warm-up: CUDA kernels and cuBLAS handles load on first use, outside the timing
    TransformersLM(model, tok, token_budget=budget).loglikelihood(requests[:8])
    sync()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    resident = torch.cuda.memory_allocated() if cuda else None
    lm = TransformersLM(model, tok, token_budget=budget, progress_every=1e9, min_shared=min_shared)
    t0 = time.perf_counter()
    res = lm.loglikelihood(requests)
    sync()
    wall = time.perf_counter() - t0
    return Run(
        [r.loglikelihood for r in res],
        [r.is_greedy for r in res],
        wall,
        sum(r.context_tokens + r.continuation_tokens - 1 for r in res),
        lm.stats["forward_tokens"],
        torch.cuda.max_memory_allocated() if cuda else None,
        resident,
    )


def plain_loglikelihoods(model, tok, requests, prefix: int):
    """lm-eval's way (tests/test_engine.py's ``plain``): one forward per request, the
    log-softmax over every position in float32."""
    import torch

    from llmboard.inference.engine import split_pair

    dev = device_of(model)
    out = []
    with torch.inference_mode():
        for r in requests:
            c, k = split_pair(tok, r.context, r.continuation, prefix)
            x = torch.tensor([c + k], device=dev)[:, :-1]
            lp = torch.log_softmax(model(x).logits.float(), -1)[0, len(c) - 1 :]
            tgt = torch.tensor(k, device=lp.device)
            ll = float(lp.gather(1, tgt[:, None]).sum())
            out.append((ll, bool((lp.argmax(-1) == tgt).all()), len(c) + len(k) - 1))
    return out


def run_plain(model, tok, requests) -> Run:
    from llmboard.inference.engine import TransformersLM

    prefix = TransformersLM(model, tok, token_budget=64).prefix_token_id
    plain_loglikelihoods(model, tok, requests[:2], prefix)  # warm-up
    sync()
    t0 = time.perf_counter()
    res = plain_loglikelihoods(model, tok, requests, prefix)
    sync()
    wall = time.perf_counter() - t0
    tokens = sum(n for _, _, n in res)
    return Run([x[0] for x in res], [x[1] for x in res], wall, tokens, tokens)
