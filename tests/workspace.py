"""A throwaway copy of the workflow with its own config, run with real Snakemake."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOW_PARTS = (
    "Snakefile",
    "rules",
    "scripts",
    "schemas",
    "llmboard",
    "envs",
    "tasks",
    "profiles",
)
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


class Workspace:
    def __init__(self, root: Path):
        self.root = root
        self.wf = root / "workflow"
        self.wd = root / "work"
        self.wd.mkdir(parents=True, exist_ok=True)
        for part in WORKFLOW_PARTS:
            src = REPO / part
            if src.is_dir():
                shutil.copytree(src, self.wf / part, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                self.wf.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, self.wf / part)

    def write_config(self, config: dict) -> None:
        (self.wd / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def command(self, *args: str) -> list[str]:
        return [
            SNAKEMAKE,
            "-s",
            str(self.wf / "Snakefile"),
            "--directory",
            str(self.wd),
            "--configfile",
            str(self.wd / "config.yaml"),
            *args,
        ]

    def snakemake(
        self, *args: str, check: bool = True, timeout: int = 900
    ) -> subprocess.CompletedProcess:
        cmd = self.command("--cores", "2", *args)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if check and run.returncode != 0:
            raise AssertionError(
                f"snakemake {' '.join(args)} failed:\n{run.stdout[-4000:]}\n{run.stderr[-6000:]}"
            )
        return run

    def planned_jobs(self, *args: str) -> set[tuple[str, str]]:
        """(rule, first output) for every job a dry-run would run."""
        out = self.snakemake("--dry-run", *args).stdout
        jobs, rule = set(), None
        for line in out.splitlines():
            m = re.match(r"^(?:local)?rule (\w+):$", line)
            if m:
                rule = m.group(1)
                continue
            m = re.match(r"^\s+output: ([^,\s]+)", line)
            if m and rule:
                jobs.add((rule, m.group(1)))
                rule = None
        return jobs

    def rules_planned(self) -> list[str]:
        return sorted(r for r, _ in self.planned_jobs())
