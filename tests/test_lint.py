"""The community standard: `snakemake --lint` is clean, the rules are snakefmt-formatted,
the Python is ruff-clean (lint and format; what ruff covers is set in pyproject.toml), and
llmboard keeps its layers (import-linter's contracts in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / cmd[0]), *cmd[1:]], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_snakemake_lint_is_clean():
    run = _run("snakemake", "--lint", "--cores", "1")
    out = run.stdout + run.stderr
    assert run.returncode == 0 and "Congratulations, your workflow is in a good condition" in out, (
        out
    )


@pytest.mark.parametrize(
    "cmd",
    [
        ("snakefmt", "--check", "Snakefile", "rules/"),
        ("ruff", "check", "."),
        ("ruff", "format", "--check", "."),
        ("lint-imports", "--no-cache"),
    ],
    ids=["snakefmt", "ruff-check", "ruff-format", "import-linter"],
)
def test_formatters_and_linters_are_clean(cmd):
    run = _run(*cmd)
    assert run.returncode == 0, run.stdout + run.stderr
