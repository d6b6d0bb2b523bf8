"""Turn a fetched checkpoint into a Hugging Face folder of safetensors + manifest.json.

Inputs: GGUF (dequantised by transformers' GGUF loader), PyTorch ``.bin``/``.pt``
state dicts (``torch.load(weights_only=True)`` only), safetensors (single file or
sharded). Output: ``model*.safetensors`` sharded by size, ``config.json``,
``generation_config.json`` where present, tokenizer files and ``manifest.json``.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import zipfile
from pathlib import Path

from ..atomic import atomic_dir, write_json
from ..hashing import sha256_json
from ..settings import schema_default
from .manifest import build_manifest

log = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "vocab.txt",
)
DEFAULT_SHARD_BYTES = int(schema_default("convert", "shard_gb") * 1024**3)


class UnsafeCheckpointError(RuntimeError):
    """A pickle that wants to run code (or anything torch's safe loader refuses)."""


class ConvertError(RuntimeError):
    pass


def detect_format(folder: Path) -> tuple[str, list[Path]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    by = lambda *sfx: [p for p in files if p.name.endswith(sfx)]  # noqa: E731
    if gguf := by(".gguf"):
        if len(gguf) > 1:
            raise ConvertError(
                f"{folder}: several GGUF files {[p.name for p in gguf]}; point the source at one"
            )
        return "gguf", gguf
    if st := by(".safetensors"):
        return "safetensors", st
    if pt := by(".bin", ".pt", ".pth"):
        return "pytorch", pt
    raise ConvertError(f"{folder}: no weights found (*.gguf, *.safetensors, *.bin, *.pt)")


def dedupe_shared(state_dict: dict) -> dict:
    """Keep one name per shared storage (tied embeddings): safetensors refuses aliases.

    The kept name is the one that is not an output head, so that transformers
    re-ties ``lm_head`` from ``embed_tokens`` on load, as its own save does.
    """
    groups: dict[tuple, list[str]] = {}
    for name, t in state_dict.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        groups.setdefault(key, []).append(name)
    keep = {}
    for names in groups.values():
        names.sort(key=lambda n: ("lm_head" in n or "output" in n.split(".")[0], n))
        keep[names[0]] = state_dict[names[0]]
        if len(names) > 1:
            log.info("shared tensor written once as %s (aliases: %s)", names[0], names[1:])
    return keep


def write_sharded(
    state_dict: dict, out: Path, max_shard_bytes: int = DEFAULT_SHARD_BYTES
) -> list[str]:
    """Write safetensors shards (+ index when more than one) the way transformers names them."""
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in dedupe_shared(state_dict).items()}
    shards: list[dict] = [{}]
    size = 0
    for name in sorted(sd):
        nbytes = sd[name].numel() * sd[name].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = sd[name]
        size += nbytes
    n = len(shards)
    names = (
        ["model.safetensors"]
        if n == 1
        else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    )
    weight_map = {}
    for fname, shard in zip(names, shards):
        save_file(shard, str(out / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
    if n > 1:
        total = sum(t.numel() * t.element_size() for t in sd.values())
        (out / "model.safetensors.index.json").write_text(
            json.dumps(
                {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
                indent=2,
            )
            + "\n"
        )
    return names


def load_pytorch_safely(path: Path) -> dict:
    import torch

    # mmap needs the zip format (torch >= 1.6); a legacy .bin is a plain pickle stream,
    # read without mmap, still through the weights-only unpickler
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError) as e:
        raise UnsafeCheckpointError(
            f"{path.name}: refused by torch.load(weights_only=True): this pickle holds more "
            f"than tensors (it may execute code), so it is not loaded. Convert it to "
            f"safetensors in a sandbox you trust. Detail: {str(e).splitlines()[0]}"
        ) from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise ConvertError(f"{path.name}: not a state dict of tensors")
    return obj


def _copy_side_files(src: Path, out: Path, required_config: bool = True) -> None:
    for name in ("config.json", "generation_config.json", *TOKENIZER_FILES):
        hits = sorted(src.rglob(name))
        if hits:
            shutil.copy2(hits[0], out / name)
    if required_config and not (out / "config.json").exists():
        raise ConvertError(
            f"{src}: config.json missing; a state dict alone does not say which architecture it is"
        )


def _convert_gguf(path: Path, out: Path, shard_bytes: int, trust_remote_code: bool) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, trust_remote_code=trust_remote_code
    )
    tok = AutoTokenizer.from_pretrained(
        path.parent, gguf_file=path.name, trust_remote_code=trust_remote_code
    )
    # save_pretrained refuses a GGUF-loaded model ("quantized with gguf and is not
    # serializable") until the quantizer's config is removed; the weights are
    # already dequantised to float32.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.config.save_pretrained(out)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)
    tok.save_pretrained(out)
    write_sharded(model.state_dict(), out, shard_bytes)


def _convert_pytorch(files: list[Path], src: Path, out: Path, shard_bytes: int) -> None:
    _copy_side_files(src, out)
    sd: dict = {}
    for p in files:
        sd.update(load_pytorch_safely(p))
    write_sharded(sd, out, shard_bytes)


def _convert_safetensors(files: list[Path], src: Path, out: Path, shard_bytes: int) -> None:
    from safetensors.torch import load_file

    _copy_side_files(src, out)
    index = sorted(src.rglob("*.safetensors.index.json"))
    if index:  # every shard the index names must be present
        wanted = set(json.loads(index[0].read_text())["weight_map"].values())
        missing = wanted - {p.name for p in files}
        if missing:
            raise ConvertError(f"{index[0].name}: shards missing: {sorted(missing)}")
    sd: dict = {}
    for p in files:
        try:
            sd.update(load_file(str(p)))
        except Exception as e:  # safetensors raises its own error type for corrupt files
            raise ConvertError(f"{p.name}: not a valid safetensors file: {e}") from e
    write_sharded(sd, out, shard_bytes)


def convert(
    checkpoint_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    trust_remote_code: bool = False,
) -> dict:
    """Convert ``checkpoint_dir`` (a fetch output) into ``out_dir``; return the manifest."""
    src = Path(checkpoint_dir)
    fetch_info = (
        json.loads((src / "fetch.json").read_text()) if (src / "fetch.json").exists() else {}
    )
    fmt, files = detect_format(src)
    log.info("converting %s (%s, %d file(s))", src, fmt, len(files))
    with atomic_dir(out_dir) as tmp:
        if fmt == "gguf":
            _convert_gguf(files[0], tmp, shard_bytes, trust_remote_code)
        elif fmt == "pytorch":
            _convert_pytorch(files, src, tmp, shard_bytes)
        else:
            _convert_safetensors(files, src, tmp, shard_bytes)
        src_files = fetch_info.get("files") or {}
        weight_hashes = {k: v for k, v in src_files.items() if k in {p.name for p in files}}
        source_sha = (
            next(iter(weight_hashes.values()))
            if len(weight_hashes) == 1
            else sha256_json(weight_hashes)
            if weight_hashes
            else None
        )
        manifest = build_manifest(
            tmp, source_sha256=source_sha, source={**fetch_info.get("source", {}), "format": fmt}
        )
        write_json(tmp / "manifest.json", manifest)
    return manifest
