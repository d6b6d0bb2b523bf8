"""Fetch a checkpoint, as published, into ``resources/checkpoints/{model}/{key}/``.

Every byte is verified before the folder appears: downloads stream into a
``.part`` file outside the output (so a killed download resumes), and the final
folder is swapped in atomically with a ``fetch.json`` that lists each file's
sha256.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from ..atomic import atomic_dir, write_json
from ..hashing import CHUNK, sha256_file
from .identity import content_files
from .sources import Source, SourceError, resolve_pkg_path

log = logging.getLogger(__name__)

# What a model needs: weights, config, tokenizer. Never code (*.py) unless asked.
DEFAULT_HF_PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "*.json",
    "*.model",
    "*.txt",
    "*.tiktoken",
    "*.gguf",
    "*.bin",
    "*.bin.index.json",
    "*.pt",
)


class IntegrityError(RuntimeError):
    """A file whose sha256 is not the expected one."""


class DownloadInterrupted(RuntimeError):
    """The connection dropped; the partial file is kept and the next fetch resumes it."""


def _copy(src: Path, dst: Path) -> None:
    """A copy that a later change of the source cannot alter: never a hard link (a
    training run writing to the source path would change the fetched checkpoint under
    its recorded sha256). GNU cp makes a copy-on-write clone where the filesystem has
    them (btrfs, XFS: no extra space, instant) and a plain copy elsewhere."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    cp = shutil.which("cp")
    if (
        cp
        and subprocess.run(
            [cp, "--reflink=auto", "--preserve=timestamps", str(src), str(dst)], capture_output=True
        ).returncode
        == 0
    ):
        return
    shutil.copy2(src, dst)


def _copy_tree_or_file(src: Path, dst_dir: Path) -> None:
    """Copy the checkpoint's files: the same set its content identity hashes."""
    if not src.exists():
        raise SourceError(f"{src}: no such file or folder")
    for name, p in content_files(src).items():
        # resolve: the hub cache holds relative symlinks into its blob store
        _copy(p.resolve(), dst_dir / name)


def download_url(url: str, dest: Path, sha256: str, partial_dir: Path, timeout: float = 60) -> None:
    """Stream ``url`` to ``dest``, resuming a partial download, then check its sha256."""
    partial_dir.mkdir(parents=True, exist_ok=True)
    part = partial_dir / f"{sha256}.part"
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            if have and resp.status != 206:  # server ignored the Range header: start over
                log.info("server does not resume; restarting %s", url)
                have = 0
            length = resp.headers.get("Content-Length")
            expected = have + int(length) if length is not None else None
            with open(part, "ab" if have else "wb") as f:
                try:
                    for block in iter(lambda: resp.read(CHUNK), b""):
                        f.write(block)
                except (http.client.IncompleteRead, OSError) as e:
                    raise DownloadInterrupted(
                        f"{url}: connection lost after {f.tell()} bytes; rerun to resume"
                    ) from e
            size = part.stat().st_size
            if expected is not None and size < expected:
                raise DownloadInterrupted(f"{url}: got {size} of {expected} bytes; rerun to resume")
    except urllib.error.HTTPError as e:
        if not (e.code == 416 and have):  # 416 with a partial: it is already complete
            raise RuntimeError(f"download failed: {url}: HTTP {e.code} {e.reason}") from e
    got = sha256_file(part)
    if got != sha256:
        part.unlink()
        raise IntegrityError(
            f"{url}: sha256 mismatch (expected {sha256}, got {got}); the download was removed"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, dest)


def _fetch_hf(src: Source, out: Path) -> dict:
    from huggingface_hub import snapshot_download

    patterns = list(src.allow_patterns or DEFAULT_HF_PATTERNS)
    # The hub cache is reused across runs and models; files are verified by the
    # hub client against their ETag, and we hash them again for the manifest.
    snap = Path(
        snapshot_download(repo_id=src.location, revision=src.revision, allow_patterns=patterns)
    )
    _copy_tree_or_file(snap, out)
    commit = snap.name
    return {"resolved_revision": commit}


def fetch(src: Source, out_dir: str | os.PathLike, partial_dir: str | os.PathLike) -> Path:
    """Materialise ``src`` in ``out_dir`` (atomically) and write ``fetch.json``."""
    out_dir = Path(out_dir)
    extra: dict = {}
    with atomic_dir(out_dir) as tmp:
        if src.kind == "url":
            name = src.location.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or "download"
            download_url(src.location, tmp / name, src.sha256, Path(partial_dir))
        elif src.kind == "hf":
            extra = _fetch_hf(src, tmp)
        elif src.kind == "pkg":
            _copy_tree_or_file(resolve_pkg_path(src.location), tmp)
        elif src.kind == "local":
            _copy_tree_or_file(Path(src.location).expanduser(), tmp)
        else:  # pragma: no cover - parse_source only makes the kinds above
            raise SourceError(f"unknown source kind {src.kind!r}")
        files = {
            p.relative_to(tmp).as_posix(): sha256_file(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        if not files:
            raise SourceError(f"{src.kind}:{src.location}: fetched no files")
        if src.sha256 and src.kind != "url":
            # a pinned single file (pkg: or local): check it like a download
            if len(files) != 1 or next(iter(files.values())) != src.sha256:
                name, got = next(iter(files.items()))
                raise IntegrityError(f"{name}: sha256 mismatch (expected {src.sha256}, got {got})")
        write_json(
            tmp / "fetch.json",
            {
                "source": {
                    "kind": src.kind,
                    "location": src.location,
                    "revision": src.revision,
                    "sha256": src.sha256,
                },
                "files": files,
                **extra,
            },
        )
    return out_dir
