"""Memory plans from metadata alone, checked against real tensors and accelerate."""

from __future__ import annotations

import json

import pytest
import torch

from llmboard.cli import main as cli
from llmboard.inference.memory_plan import (
    CUDA_RESERVE_BYTES,
    GiB,
    PlanDoesNotFit,
    _arch_and_counts,
    config_counts,
    mlp_width,
    plan_memory,
)
from llmboard.settings import schema_default

from conftest import REPO

QWEN72 = REPO / "tests" / "data" / "qwen2-72b-config.json"

BUDGET = schema_default("inference", "token_budget")


def test_plan_bytes_equal_real_tensor_sizes(tiny_dirs):
    from transformers import AutoModelForCausalLM

    for arch, d in tiny_dirs.items():
        for precision, dtype in (
            ("fp32", torch.float32),
            ("bf16", torch.bfloat16),
            ("fp16", torch.float16),
        ):
            model = AutoModelForCausalLM.from_pretrained(d, dtype=dtype)
            real = sum(p.numel() * p.element_size() for p in model.parameters())
            assert plan_memory(d, precision, token_budget=BUDGET).weight_bytes == real, (
                arch,
                precision,
            )


def test_int8_plan_matches_bitsandbytes_footprint(tiny_dirs):
    from llmboard.inference.loading import load_model

    d = tiny_dirs["llama"]
    model, _, _ = load_model(d, "int8")
    real = sum(p.numel() * p.element_size() for p in model.parameters())
    assert plan_memory(d, "int8", token_budget=BUDGET).weight_bytes == real


def test_config_json_alone_counts_like_the_manifest(tiny_dirs):
    d = tiny_dirs["qwen2"]
    manifest = json.loads((d / "manifest.json").read_text())
    _, params, matrix, per_layer = config_counts(d / "config.json")
    assert params == manifest["parameters"] and matrix == manifest["layer_matrix_parameters"]
    assert per_layer == manifest["parameters_per_layer"]


def test_qwen2_72b_on_80gb_gpus():
    bf16 = plan_memory(QWEN72, "bf16", token_budget=BUDGET, gpu_memory_gb=80)
    int8 = plan_memory(QWEN72, "int8", token_budget=BUDGET, gpu_memory_gb=80)
    fp32 = plan_memory(QWEN72, "fp32", token_budget=BUDGET, gpu_memory_gb=80)
    assert 72e9 < bf16.parameters < 73.5e9  # Qwen2-72B: 72.7B parameters
    assert bf16.weight_bytes > 80 * GiB  # one card cannot hold the bf16 weights
    assert bf16.gpus >= 2 and int8.gpus < bf16.gpus < fp32.gpus
    assert "GPU(s)" in bf16.arithmetic and "80 GB GPUs" in bf16.arithmetic
    assert int8.gpus == 1
    with pytest.raises(PlanDoesNotFit, match=r"needs .* GiB = 2 x 80 GB GPUs, but at most 1 are"):
        plan_memory(QWEN72, "bf16", token_budget=BUDGET, gpu_memory_gb=80, max_gpus=1)


@pytest.mark.parametrize("share", [0.55, 0.4, 0.3])
def test_plan_split_agrees_with_accelerate(tmp_path, share):
    """Fake GPU sizes: accelerate places the layers over as many GPUs as the plan says."""
    from accelerate import infer_auto_device_map, init_empty_weights
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(
        vocab_size=512,
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=12,
        num_attention_heads=4,
        num_key_value_heads=4,
        tie_word_embeddings=False,
    )
    cfg.save_pretrained(tmp_path)
    p = plan_memory(tmp_path / "config.json", "fp32", token_budget=1, margin=0.0)
    per_gpu = int(p.weight_bytes * share)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(cfg)
    model.tie_weights()
    dm = infer_auto_device_map(
        model,
        max_memory={i: per_gpu for i in range(6)} | {"cpu": 10 * GiB},
        no_split_module_classes=model._no_split_modules,
    )
    used = set(dm.values())
    planned = plan_memory(
        tmp_path / "config.json",
        "fp32",
        token_budget=1,
        margin=0.0,
        gpu_memory_gb=(per_gpu + CUDA_RESERVE_BYTES) / GiB,
    )
    assert "cpu" not in used and len(used) == planned.gpus, (dm, planned.arithmetic)


def test_cli_plan_prints_table(capsys):
    assert (
        cli(
            [
                "plan",
                "--config-json",
                str(QWEN72),
                "--gpu-memory-gb",
                "80",
                "--precisions",
                "bf16",
                "int8",
                "--explain",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "qwen2-72b-config" in out and "bf16" in out and "int8" in out
    assert "weights 72,7" in out


def test_cli_plan_for_the_default_config(capsys, tmp_path):
    assert cli(["plan", "--config", str(REPO / "config.yaml"), "--workdir", str(tmp_path)]) == 0
    assert "unknown: fetch it first" in capsys.readouterr().out


@pytest.mark.parametrize(
    "config",
    [
        dict(
            model_type="llama",
            hidden_size=576,
            intermediate_size=1536,
            num_attention_heads=9,
            num_key_value_heads=3,
        ),
        dict(
            model_type="qwen2",
            hidden_size=256,
            intermediate_size=1376,
            num_attention_heads=8,
            num_key_value_heads=2,
        ),
    ],
)
def test_mlp_width_from_layer_parameters(tmp_path, config):
    """The activation estimate needs the MLP width; manifests and meta models give it
    through one layer's parameter count (grouped-query attention and biases included)."""
    from transformers import AutoConfig

    cfg = AutoConfig.for_model(**config, num_hidden_layers=2, vocab_size=1000)
    cfg.save_pretrained(tmp_path)
    arch, _, _, per_layer = _arch_and_counts(tmp_path / "config.json")
    assert mlp_width(arch, per_layer) == config["intermediate_size"]


def test_manifest_and_config_give_the_same_plan(tiny_dirs):
    for d in tiny_dirs.values():
        from_manifest = plan_memory(d, "bf16", token_budget=BUDGET, gpu_memory_gb=80)
        from_config = plan_memory(d / "config.json", "bf16", token_budget=BUDGET, gpu_memory_gb=80)
        assert from_manifest.activation_bytes == from_config.activation_bytes > 0
