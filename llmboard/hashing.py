"""Content hashes used for provenance and for cache keys."""

from __future__ import annotations

import hashlib
import json
import os

CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def stable_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_json(obj) -> str:
    """Hash of a JSON-able object that does not depend on key order."""
    return hashlib.sha256(stable_json(obj).encode("utf-8")).hexdigest()


def short(digest: str, n: int = 12) -> str:
    return digest[:n]


SEAL = "content_sha256"


def seal(obj: dict) -> dict:
    """``obj`` with the sha256 of its own content added: a number edited afterwards no
    longer matches, and whoever reads it (the leaderboard, ``verify``) refuses it."""
    return {**obj, SEAL: sha256_json({k: v for k, v in obj.items() if k != SEAL})}


def is_sealed(obj: dict) -> bool:
    """True when ``obj`` carries a content hash that matches its content."""
    return obj.get(SEAL) == sha256_json({k: v for k, v in obj.items() if k != SEAL})
