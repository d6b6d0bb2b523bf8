"""Turn a validated config into the workflow's targets (used by rules/common.smk).

Pure Python, no torch: the Snakefile imports it on every parse. Every path that
stands for a computation carries the hash of what decides its numbers, so a
changed task definition, model source or scoring code gets new files (and only
those are computed), even in a fresh checkout without ``.snakemake/`` metadata.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .hashing import sha256_file, sha256_json, short
from .precisions import PRECISIONS
from .sources import parse_source
from .tasks import Task, TaskError, find_task_files, is_group, load_group, load_task

PACKAGE_DIR = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def scorer_version() -> str:
    """Hash of the scoring code: editing how a metric is computed re-scores, no inference."""
    return short(sha256_file(PACKAGE_DIR / "scoring.py"), 8)


def coverage_key(score_files: list[str]) -> str:
    """Names the exact set of scores a leaderboard covers (its inputs' identity)."""
    return short(sha256_json(sorted(score_files)))


@dataclass
class Plan:
    models: dict  # name -> entry (with "key")
    precisions: dict  # model -> [precision]
    tasks: dict[str, Task]
    display: list[str]
    groups: dict = field(default_factory=dict)

    def checkpoint_dir(self, model: str) -> str:
        return f"resources/checkpoints/{model}/{self.models[model]['key']}"

    def model_dir(self, model: str) -> str:
        return f"resources/models/{model}/{self.models[model]['key']}"

    def prediction_files(self, model: str, precision: str, task: str, ext: str = "parquet") -> list[str]:
        t = self.tasks[task]
        n = t.shards
        return [f"results/predictions/{model}/{precision}/{task}/{t.hash}/{i}-of-{n}.{ext}"
                for i in range(n)]

    def group_members(self) -> dict[str, list[str]]:
        """Group -> member tasks; one inference job runs all of a group's members for a
        shard, so 57 MMLU subjects pay for one model load, not 57."""
        return {g: sorted(t for ms in d["subgroups"].values() for t in ms if t in self.tasks)
                for g, d in sorted(self.groups.items())}

    def solo_tasks(self) -> list[str]:
        grouped = {t for ms in self.group_members().values() for t in ms}
        return sorted(t for t in self.tasks if t not in grouped)

    def group_outputs(self, group: str, ext: str) -> list[str]:
        out = []
        for t in self.group_members()[group]:
            h = self.tasks[t].hash
            out.append(f"results/predictions/{{model}}/{{precision}}/{t}/{h}/{{shard}}-of-{{nshards}}.{ext}")
        return out

    def score_file(self, model: str, precision: str, task: str) -> str:
        t = self.tasks[task]
        return f"results/scores/{model}/{precision}/{task}/{t.hash}-{scorer_version()}.json"

    def score_files(self) -> list[str]:
        return [self.score_file(m, p, t) for m in sorted(self.models)
                for p in self.precisions[m] for t in sorted(self.tasks)]

    def prediction_list(self) -> list[list]:
        """[model, precision, task, [parquets]] for every inference target (precision agreement)."""
        return [[m, p, t, self.prediction_files(m, p, t)] for m in sorted(self.models)
                for p in self.precisions[m] for t in sorted(self.tasks)]

    def board_prefix(self) -> str:
        return f"results/boards/{coverage_key(self.score_files())}/leaderboard"


def build_plan(config: dict, tasks_dir: str | os.PathLike) -> Plan:
    index = find_task_files(tasks_dir)
    models = {}
    for name, entry in sorted((config.get("models") or {}).items()):
        src = parse_source(entry, name)
        models[name] = {**entry, "key": src.key()}
    default_precisions = list(config.get("precisions") or ["fp32"])
    precisions = {}
    for name in models:
        ps = list(models[name].get("precisions") or default_precisions)
        for p in ps:
            if p not in PRECISIONS:
                raise ValueError(f"config: models.{name}: unknown precision {p!r}; "
                                 f"choose from {sorted(PRECISIONS)}")
        precisions[name] = ps
    tasks: dict[str, Task] = {}
    groups: dict = {}
    display = []
    for name, overrides in (config.get("tasks") or {}).items():
        overrides = dict(overrides or {})
        if name not in index:
            raise TaskError(f"config: tasks.{name}: no task or group of that name in {tasks_dir} "
                            f"(known: {', '.join(sorted(index)[:12])}, ...)")
        display.append(name)
        data = load_group(index[name]) if is_group(index[name]) else None
        if data is not None:
            agg = data.get("aggregate") or {}
            groups[name] = {"metric": agg.get("metric", "acc"), "subgroups": data["subgroups"]}
            members = [t for ms in data["subgroups"].values() for t in ms]
        else:
            members = [name]
        for t in members:
            if t not in index:
                raise TaskError(f"{index[name]}: member task {t!r} not found")
            tasks[t] = load_task(index[t], overrides)
    return Plan(models, precisions, tasks, display, groups)

