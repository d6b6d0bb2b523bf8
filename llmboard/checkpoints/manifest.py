"""Describe a converted model folder from its safetensors headers alone.

No tensor is loaded: a safetensors file starts with an 8-byte little-endian
header length and a JSON header giving every tensor's dtype, shape and byte
range. That is enough for parameter counts and memory plans.
"""

from __future__ import annotations

import json
import re
import struct
from collections import defaultdict
from pathlib import Path

from ..hashing import sha256_file, sha256_json

# transformers' names for the repeated decoder block: Llama/Qwen2/Mistral use
# ``model.layers.N``, GPT-2 ``transformer.h.N``, GPT-NeoX ``gpt_neox.layers.N``.
LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks|block)\.(\d+)\.")

DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}


def read_safetensors_header(path: str | Path) -> dict:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > 100_000_000:
            raise ValueError(f"{path}: not a safetensors file (header length {n})")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header


def tensor_table(folder: str | Path) -> dict[str, dict]:
    """name -> {dtype, shape, numel, nbytes, file} for every tensor in the folder."""
    table: dict[str, dict] = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        for name, info in read_safetensors_header(f).items():
            start, end = info["data_offsets"]
            numel = 1
            for d in info["shape"]:
                numel *= d
            table[name] = {
                "dtype": info["dtype"],
                "shape": info["shape"],
                "numel": numel,
                "nbytes": end - start,
                "file": f.name,
            }
    return table


def layer_of(name: str) -> str:
    m = LAYER_RE.search(name)
    return f"layer.{int(m.group(1))}" if m else "other"


def _layer_sorted(d: dict) -> dict:
    return dict(
        sorted(
            d.items(),
            key=lambda kv: (kv[0] == "other", int(kv[0].split(".")[1]) if kv[0] != "other" else 0),
        )
    )


def checkpoint_sha256(file_hashes: dict[str, str]) -> str:
    """Identity of the weights: the hash of the weight files' sha256s."""
    return sha256_json({k: v for k, v in file_hashes.items() if k.endswith(".safetensors")})


def build_manifest(
    folder: str | Path, source_sha256: str | None = None, source: dict | None = None
) -> dict:
    folder = Path(folder)
    table = tensor_table(folder)
    if not table:
        raise ValueError(f"{folder}: no *.safetensors files")
    files = {
        p.name: sha256_file(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != "manifest.json"
    }
    per_dtype: dict[str, int] = defaultdict(int)
    per_layer: dict[str, int] = defaultdict(int)
    params_layer: dict[str, int] = defaultdict(int)
    matrix_params = 0  # 2-D weights inside decoder layers: what int8/nf4 quantise
    for name, t in table.items():
        per_dtype[t["dtype"]] += t["nbytes"]
        per_layer[layer_of(name)] += t["nbytes"]
        params_layer[layer_of(name)] += t["numel"]
        if layer_of(name) != "other" and len(t["shape"]) == 2:
            matrix_params += t["numel"]
    config = (
        json.loads((folder / "config.json").read_text())
        if (folder / "config.json").exists()
        else {}
    )
    text_cfg = config.get("text_config", config)
    return {
        "format": "llmboard-manifest/1",
        # identity of the weights: the hash of the weight files' hashes
        "checkpoint_sha256": checkpoint_sha256(files),
        "source_sha256": source_sha256,
        "source": source,
        "files": files,
        "parameters": sum(t["numel"] for t in table.values()),
        "tensors": len(table),
        "bytes_total": sum(t["nbytes"] for t in table.values()),
        "bytes_per_dtype": dict(sorted(per_dtype.items())),
        "bytes_per_layer": _layer_sorted(per_layer),
        "parameters_per_layer": _layer_sorted(params_layer),
        "layer_matrix_parameters": matrix_params,
        "architecture": {
            "model_type": config.get("model_type"),
            "architectures": config.get("architectures"),
            "num_hidden_layers": text_cfg.get("num_hidden_layers", text_cfg.get("n_layer")),
            "hidden_size": text_cfg.get("hidden_size", text_cfg.get("n_embd")),
            "num_attention_heads": text_cfg.get("num_attention_heads", text_cfg.get("n_head")),
            "num_key_value_heads": text_cfg.get(
                "num_key_value_heads", text_cfg.get("num_attention_heads", text_cfg.get("n_head"))
            ),
            "vocab_size": text_cfg.get("vocab_size"),
            "max_position_embeddings": text_cfg.get(
                "max_position_embeddings", text_cfg.get("n_positions")
            ),
            "tie_word_embeddings": config.get(
                "tie_word_embeddings", text_cfg.get("tie_word_embeddings")
            ),
        },
    }


def load_manifest(folder: str | Path) -> dict:
    path = Path(folder) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; convert the model first")
    return json.loads(path.read_text())
