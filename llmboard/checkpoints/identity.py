"""What a local checkpoint *is*: the sha256 of its files, cheaply kept current.

A local ``source:`` (a folder or file, or a file inside an installed package) can change
under the same path: a training run writes its next checkpoint there, a bit flips. Its
identity is therefore its content. Hashing gigabytes on every parse of the Snakefile
would be slow, so each file's sha256 is cached by (size, mtime in ns): an unchanged file
costs one ``stat``, a changed one is hashed again, and only it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..atomic import write_json
from ..hashing import sha256_file, sha256_json

CACHE_FORMAT = "llmboard-file-hashes/1"


class FileHashCache:
    """path -> (size, mtime_ns, sha256), kept in one JSON file. Concurrent writers
    (several Snakemake parses) each replace the file atomically; an entry is a fact
    about a file version, so whichever write wins holds only true entries."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.entries: dict[str, list] = {}
        self.changed = False
        try:
            data = json.loads(self.path.read_text())
            if data.get("format") == CACHE_FORMAT:
                self.entries = data["files"]
        except (OSError, ValueError, KeyError, AttributeError):
            pass  # missing or unreadable: start empty, it is only a cache

    def sha256(self, file: Path) -> str:
        st = file.stat()
        key = str(file.resolve())
        hit = self.entries.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        digest = sha256_file(file)
        self.entries[key] = [st.st_size, st.st_mtime_ns, digest]
        self.changed = True
        return digest

    def save(self) -> None:
        if self.changed:
            write_json(self.path, {"format": CACHE_FORMAT, "files": self.entries})
            self.changed = False


def content_files(path: Path) -> dict[str, Path]:
    """Relative name -> file, for a file or every file under a folder (hidden ones and
    Python caches left out: they are not the checkpoint). What fetch copies and what the
    content identity hashes: one definition."""
    if path.is_file():
        return {path.name: path}
    out = {}
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if p.is_file() and not any(
            part.startswith(".") or part == "__pycache__" for part in rel.parts
        ):
            out[rel.as_posix()] = p
    return out


def content_sha256(path: Path, cache: FileHashCache) -> str:
    """Identity of a local checkpoint: the hash of its files' names and sha256s."""
    return sha256_json({name: cache.sha256(f) for name, f in content_files(path).items()})
