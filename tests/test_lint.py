"""The community standard: `snakemake --lint` is clean and the rules are snakefmt-formatted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO

BIN = Path(sys.executable).parent


def test_snakemake_lint_is_clean():
    run = subprocess.run([str(BIN / "snakemake"), "--lint", "--cores", "1"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0 and "Congratulations, your workflow is in a good condition" in out, out


def test_snakefmt_check():
    run = subprocess.run([str(BIN / "snakefmt"), "--check", "Snakefile", "rules/"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
