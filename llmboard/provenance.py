"""Where a number came from: code and library versions, git commit, time."""

from __future__ import annotations

import datetime as _dt
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from . import __version__

LIBRARIES = (
    "torch",
    "transformers",
    "accelerate",
    "bitsandbytes",
    "safetensors",
    "datasets",
    "polars",
)


def library_versions() -> dict[str, str | None]:
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the llmboard checkout, with ``-dirty`` when the package has local edits."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "llmboard"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def code_provenance() -> dict:
    return {
        "llmboard_version": __version__,
        "git_commit": git_commit(),
        "libraries": library_versions(),
    }


def now_utc() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
