"""A missing service (the local Slurm, Chromium) skips its tests on a developer's
machine, but fails them where LLMBOARD_REQUIRE_SERVICES=1, as .ci/run sets it: CI
cannot pass without having run them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

PROBE = """
from conftest import missing_service

def test_needs_a_service():
    missing_service("the frobnicator is not running")
"""


@pytest.mark.parametrize("required, outcome", [("1", "1 failed"), ("", "1 skipped")])
def test_missing_service_fails_only_where_required(tmp_path, required, outcome):
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {**os.environ, "LLMBOARD_REQUIRE_SERVICES": required}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            "-c",
            os.devnull,
            f"--confcutdir={REPO / 'tests'}",
            str(tmp_path / "test_probe.py"),
        ],
        env={**env, "PYTHONPATH": str(REPO / "tests")},
        capture_output=True,
        text=True,
    )
    assert outcome in run.stdout, run.stdout + run.stderr
    if required:
        assert "required service missing" in run.stdout and "frobnicator" in run.stdout


def test_ci_requires_the_services():
    assert "export LLMBOARD_REQUIRE_SERVICES=1" in (REPO / ".ci" / "run").read_text()
