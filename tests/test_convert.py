"""Convert: GGUF, .bin, safetensors (single, sharded) -> verified safetensors folder."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch

from llmboard.checkpoints.convert import UnsafeCheckpointError, convert
from llmboard.checkpoints.fetch import fetch
from llmboard.checkpoints.manifest import read_safetensors_header
from llmboard.checkpoints.sources import parse_source

from conftest import logits_of, save_tiny


def _fetch_convert(src, tmp_path, **kw):
    ckpt = fetch(parse_source({"source": str(src)}), tmp_path / "ckpt", tmp_path / "part")
    manifest = convert(ckpt, tmp_path / "model", **kw)
    return tmp_path / "model", manifest


def test_gguf_matches_transformers_own_gguf_load(smol_gguf, smol_dir):
    ours = logits_of(smol_dir)
    ref = logits_of(smol_gguf.parent, gguf_file=smol_gguf.name)
    assert torch.equal(ours, ref)


def test_converted_smollm2_loads_plainly_and_answers(smol_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_dir)
    model = AutoModelForCausalLM.from_pretrained(smol_dir)
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    enc = tok.apply_chat_template(
        msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**enc, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_smollm2_manifest(smol_dir):
    m = json.loads((smol_dir / "manifest.json").read_text())
    assert m["parameters"] == 134_515_008  # SmolLM2-135M, tied embeddings counted once
    assert m["architecture"]["num_hidden_layers"] == 30
    assert len([k for k in m["bytes_per_layer"] if k.startswith("layer.")]) == 30
    assert m["source"]["format"] == "gguf" and len(m["source_sha256"]) == 64


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_bin_state_dict_bit_identical(arch, tmp_path, tokenizer_dir):
    src = save_tiny(arch, tmp_path / "src", tokenizer_dir, fmt="bin")
    ref_model_dir = save_tiny(arch, tmp_path / "ref", tokenizer_dir, fmt="safetensors")
    out, manifest = _fetch_convert(src, tmp_path)
    assert torch.equal(logits_of(out), logits_of(ref_model_dir))
    assert manifest["source"]["format"] == "pytorch"


def test_legacy_non_zip_bin_loads_safely(tmp_path, tokenizer_dir):
    """A pre-1.6 .bin cannot be memory-mapped; it is read through the weights-only
    unpickler all the same, and gives the same logits."""
    import zipfile

    src = save_tiny("llama", tmp_path / "src", tokenizer_dir, fmt="legacy-bin")
    assert not zipfile.is_zipfile(src / "pytorch_model.bin")
    ref_model_dir = save_tiny("llama", tmp_path / "ref", tokenizer_dir, fmt="safetensors")
    out, _ = _fetch_convert(src, tmp_path)
    assert torch.equal(logits_of(out), logits_of(ref_model_dir))


def test_tied_weights_written_once(tmp_path, tokenizer_dir):
    src = save_tiny("gpt2", tmp_path / "src", tokenizer_dir, fmt="bin")
    out, _ = _fetch_convert(src, tmp_path)
    names = read_safetensors_header(out / "model.safetensors")
    assert "transformer.wte.weight" in names and "lm_head.weight" not in names


def test_sharded_safetensors_resharded_identical(tmp_path, tokenizer_dir):
    src = save_tiny("qwen2", tmp_path / "src", tokenizer_dir, fmt="sharded")
    assert len(list(src.glob("*.safetensors"))) > 1
    out, manifest = _fetch_convert(src, tmp_path, shard_bytes=2_000_000)
    shards = sorted(out.glob("*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").exists()
    assert torch.equal(logits_of(out), logits_of(src))
    assert set(manifest["files"]) >= {p.name for p in shards}


def test_manifest_bytes_equal_real_tensor_sizes(tiny_dirs):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    for d in tiny_dirs.values():
        m = json.loads((d / "manifest.json").read_text())
        tensors = {}
        for f in d.glob("*.safetensors"):
            tensors.update(load_file(str(f)))
        assert m["bytes_total"] == sum(t.numel() * t.element_size() for t in tensors.values())
        assert m["parameters"] == AutoModelForCausalLM.from_pretrained(d).num_parameters()
        assert sum(m["bytes_per_layer"].values()) == m["bytes_total"]
        assert m["bytes_per_dtype"] == {"F32": m["bytes_total"]}


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_refused_and_nothing_written(tmp_path, tokenizer_dir):
    src = save_tiny("llama", tmp_path / "src", tokenizer_dir, fmt="bin")
    marker = tmp_path / "pwned"
    with open(src / "pytorch_model.bin", "wb") as f:
        pickle.dump({"model.embed_tokens.weight": _Evil(marker)}, f)
    ckpt = fetch(parse_source({"source": str(src)}), tmp_path / "ckpt", tmp_path / "part")
    with pytest.raises(UnsafeCheckpointError, match="pytorch_model.bin.*weights_only=True"):
        convert(ckpt, tmp_path / "model")
    assert not marker.exists()
    assert not (tmp_path / "model").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model")]


def test_remote_code_never_runs_unless_enabled(tmp_path, tiny_dirs):
    """A config that points at custom code: loading without trust_remote_code ignores it."""
    from llmboard.inference.loading import load_model

    d = tmp_path / "m"
    shutil.copytree(tiny_dirs["llama"], d)
    marker = tmp_path / "ran"
    (d / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\n"
        "from transformers import LlamaForCausalLM as EvilModel\n"
    )
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "evil.EvilModel"}
    (d / "config.json").write_text(json.dumps(cfg))
    model, _, _ = load_model(d, "fp32")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not marker.exists()


def test_missing_config_named(tmp_path, tokenizer_dir):
    from llmboard.checkpoints.convert import ConvertError

    src = save_tiny("llama", tmp_path / "src", tokenizer_dir, fmt="bin")
    (src / "config.json").unlink()
    ckpt = fetch(parse_source({"source": str(src)}), tmp_path / "ckpt", tmp_path / "part")
    with pytest.raises(ConvertError, match="config.json missing"):
        convert(ckpt, tmp_path / "model")
