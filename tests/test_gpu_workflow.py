"""GPU check 11 (#30 item 3) prepared on the CPU: the workflow's wheelhouse, installed
offline part by part into a Python that has torch and transformers and nothing else (as
#30 describes the GPU machine), runs the workflow end to end there.

The wheelhouse is built as ``prepare --workflow`` builds the GPU machine's, for this
machine's Python instead of 3.12: so these tests, like ``make setup``, need the package
index pip is configured with. The install and the run that follow have every proxy
variable pointing at a closed port: a missing distribution in the wheelhouse, a part
over one device call, or an install or run that reaches for the network fails here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from bench.gpu_check import kit

from conftest import REPO


def bare_python(root: Path, packages) -> Path:
    """A fresh venv (no system site-packages) that sees only ``packages`` and what they
    need, installed here: each distribution's top-level files linked into one folder that
    a .pth file puts on its path."""
    venv.create(root / "venv", with_pip=False)
    base = root / "base"
    base.mkdir()
    for name in kit.installed_closure(packages):
        for f in metadata.distribution(name).files or []:
            top = f.parts[0]
            link = base / top
            if top != ".." and not link.exists():
                link.symlink_to(Path(f.locate()).parents[len(f.parts) - 1] / top)
    site = next((root / "venv/lib").glob("python3*/site-packages"))
    (site / "gpu_machine_base.pth").write_text(f"{base}\n")
    return root / "venv/bin/python"


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("wheelhouse")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    # xz's fastest level (prepare uses 6): the same packing and parts, in a fraction of
    # the time; more parts, as each still holds at most PART_BYTES
    return out, kit.build_wheelhouse(out, python, preset=0)


# as on the GPU machine: no network (pip's index, or anything else, through a closed port)
NO_NETWORK = {"PIP_NO_INDEX": "1", "NO_PROXY": "", "no_proxy": ""} | {
    k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
}


def _python(exe: Path, *args: str, **env) -> subprocess.CompletedProcess:
    run_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | NO_NETWORK | env
    return subprocess.run(
        [str(exe), *args], cwd=REPO, env=run_env, capture_output=True, text=True, timeout=900
    )


def test_wheelhouse_parts_fit_a_device_call_and_leave_out_the_base(wheelhouse, tokenizer_dir):
    out, listing = wheelhouse
    base = kit.installed_closure(kit.GPU_BASE)
    names = {canonicalize_name(w.split("-")[0]) for w in listing["wheels"]}
    need = {"snakemake", "polars", "polars-runtime-32", "jsonschema", "scipy", "datasets"}
    assert need <= names and not names & set(base) and "pulp" not in names
    assert len(listing["wheels"]) == len(listing["requirements"])  # one wheel each
    parts = [out / p["folder"] for p in listing["parts"]]
    assert len(parts) >= 2  # polars' runtime and pyarrow are 51 MiB each
    # what a call carries: the largest part, the tokenizer and the tracked working tree
    part = max(sum(f.stat().st_size for f in p.iterdir()) for p in parts)
    tokenizer = sum(f.stat().st_size for f in tokenizer_dir.iterdir())
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    tree = sum((REPO / f).stat().st_size for f in tracked.stdout.decode().split("\0") if f)
    assert part + tokenizer + tree <= kit.TRAVEL_LIMIT, (part, tokenizer, tree)
    assert sum(p["bytes"] for p in listing["parts"]) == listing["packed"]["bytes"]


def test_install_names_a_missing_part(wheelhouse, tmp_path):
    """Each part comes in its own call: a call that finds one missing says which."""
    out, listing = wheelhouse
    last = listing["parts"][-1]["folder"]
    shutil.copytree(out / last, tmp_path / last)
    cmd = [sys.executable, "-m", "bench.gpu_check", "install-wheels", str(tmp_path)]
    done = subprocess.run(
        [*cmd, "--target", str(tmp_path / "site")], cwd=REPO, capture_output=True, text=True
    )
    absent = ", ".join(p["folder"] for p in listing["parts"][:-1])
    assert done.returncode != 0 and f"{absent} missing" in done.stderr, done.stderr
    assert not (tmp_path / "site").exists()


@pytest.mark.slow
def test_workflow_runs_from_the_wheelhouse_alone(wheelhouse, tmp_path, tokenizer_dir):
    out, listing = wheelhouse
    python = bare_python(tmp_path / "gpu-machine", (*kit.GPU_BASE, "pip"))
    # the bare Python really is bare: torch and transformers, no workflow packages
    probe = "import torch, transformers, importlib.util as u; print(u.find_spec('snakemake'), u.find_spec('polars'))"
    done = _python(python, "-c", probe)
    assert done.returncode == 0 and done.stdout.split() == ["None", "None"], done.stderr
    site = tmp_path / "site"
    # as in the last of the calls that carried the parts; the network plays no part
    cmd = ["-m", "bench.gpu_check", "install-wheels", str(out), "--target", str(site)]
    done = _python(python, *cmd)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "warning:" not in done.stdout, done.stdout  # every requirement met
    report = tmp_path / "report"
    cmd = ["-m", "bench.gpu_check", "run", "--tiny", "--only", "workflow"]
    cmd += ["--tokenizer", str(tokenizer_dir), "--out", str(report)]
    done = _python(python, *cmd, PYTHONPATH=str(site))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (row,) = json.loads((report / "gpu_check.json").read_text())["rows"]
    figs = row["figures"]
    assert row["check"] == 11 and row["status"] == "pass", row
    assert {"fetch", "convert", "infer", "score", "leaderboard"} <= set(figs["rules_run"])
    assert figs["shards"] == 6 and figs["cuda_visible_devices"] == ["0"]
    assert figs["board_rows"] == 2 and figs["verify"] == "OK"


def test_workflow_check_is_skipped_without_snakemake(tmp_path, tokenizer_dir):
    """On a GPU machine without the wheelhouse check 11 says why instead of failing."""
    python = bare_python(tmp_path / "gpu-machine", kit.GPU_BASE)
    cmd = ["-m", "bench.gpu_check", "run", "--tiny", "--only", "workflow"]
    done = _python(python, *cmd, "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads((tmp_path / "gpu_check.json").read_text())["rows"]
    assert row["status"] == "skipped" and "snakemake" in row["note"], row
