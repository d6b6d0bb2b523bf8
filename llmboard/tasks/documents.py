"""A task's documents: its dataset split, cut to ``limit``, and shards of it.

``datasets`` is imported only when documents are read (the Snakefile imports this
package's definitions on every parse).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from ..checkpoints.identity import FileHashCache, content_sha256
from ..hashing import sha256_json
from .definitions import Task, TaskError
from .prompts import needs_pool


def _resolve_local(source: str, task_path: Path) -> Path:
    if source.startswith("pkg:"):
        from ..checkpoints.sources import resolve_pkg_path

        return resolve_pkg_path(source[4:])
    p = Path(source).expanduser()
    if not p.is_absolute():
        near = task_path.parent / p
        p = near if near.exists() else Path.cwd() / p
    if not p.exists():
        raise TaskError(f"{task_path}: dataset.source {source!r} not found")
    return p


def load_split(task: Task, split: str | None = None):
    """The documents of a split as a ``datasets.Dataset`` (untouched, no limit); a data
    file that cannot be read is named, with the task file that points at it."""
    try:
        return _load_split(task, split)
    except TaskError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets' and pyarrow's errors name neither
        raise TaskError(
            f"{task.path}: dataset.source {task.spec['dataset']['source']!r} "
            f"(split {split or task.split!r}) "
            f"cannot be read: {type(e).__name__}: {e}"
        ) from None


DATA_FILE_KINDS = {
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".txt": "text",
}
TEXT_SAMPLE_BY = "paragraph"  # a .txt file's documents when dataset.sample_by is absent


def _file_kind(p: Path) -> str | None:
    """datasets' builder for a data file (``.gz``: that of the name inside)."""
    suffixes = p.suffixes[-2:] if p.suffix == ".gz" else p.suffixes[-1:]
    kind = DATA_FILE_KINDS.get(suffixes[0]) if suffixes else None
    return None if p.suffix == ".gz" and kind != "json" else kind


def _read_field(task: Task, p: Path, field: str):
    """``dataset.field``: the documents are each JSON line's ``field`` object, in order;
    with ``dataset.unique_by``, only the first document of each value of that field."""
    import gzip
    import json

    import datasets

    rows, seen = [], set()
    unique = task.spec["dataset"].get("unique_by")
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            doc = row.get(field) if isinstance(row, dict) else None
            if not isinstance(doc, dict):
                raise TaskError(
                    f"{task.path}: dataset.field {field!r}: line {n} of {p.name} has no "
                    f"{field!r} object"
                )
            if unique is not None:
                if unique not in doc:
                    raise TaskError(
                        f"{task.path}: dataset.unique_by {unique!r}: line {n} of {p.name} "
                        f"has no {unique!r}"
                    )
                key = json.dumps(doc[unique], sort_keys=True)
                if key in seen:  # a request log repeats a document per request
                    continue
                seen.add(key)
            rows.append(doc)
    return datasets.Dataset.from_list(rows)


def _read_text(task: Task, p: Path):
    """A ``.txt`` file as documents ``{"text": ...}``, cut as ``dataset.sample_by`` says:
    ``paragraph`` (the default: text between blank lines, stripped), ``line`` (each
    non-empty line, without its line break) or ``document`` (the whole file)."""
    import re

    import datasets

    content = p.read_text(encoding="utf-8")
    how = task.spec["dataset"].get("sample_by") or TEXT_SAMPLE_BY
    if how == "document":
        texts = [content]
    elif how == "line":
        texts = [line for line in content.splitlines() if line.strip()]
    else:
        texts = [t.strip() for t in re.split(r"\n[ \t\r\f\v]*\n", content) if t.strip()]
    if not texts:
        raise TaskError(f"{task.path}: dataset.source {p.name}: no text (empty file)")
    return datasets.Dataset.from_dict({"text": texts})


def _load_split(task: Task, split: str | None):
    data = _load_source(task, split)
    columns = task.spec["dataset"].get("columns")
    if columns is not None:
        missing = [c for c in columns if c not in data.column_names]
        if missing:
            raise TaskError(
                f"{task.path}: dataset.columns {missing} not in the documents "
                f"(they have {data.column_names})"
            )
        data = data.select_columns(list(columns))
    return data


def _load_source(task: Task, split: str | None):
    import datasets

    ds = task.spec["dataset"]
    split = split or task.split
    source = ds["source"]
    if source.startswith("hf:"):
        return datasets.load_dataset(
            source[3:], ds.get("name"), split=split, revision=ds.get("revision")
        )
    p = _resolve_local(source, task.path)
    if ds.get("field") is not None:
        if not (p.is_file() and _file_kind(p) == "json"):
            raise TaskError(
                f"{task.path}: dataset.field needs a JSON Lines file (.jsonl, .jsonl.gz), "
                f"not {p.name}"
            )
        return _read_field(task, p, ds["field"])
    if ds.get("sample_by") is not None and not (p.is_file() and _file_kind(p) == "text"):
        raise TaskError(f"{task.path}: dataset.sample_by is for a .txt file, not {p.name}")
    if p.is_file():
        kind = _file_kind(p)
        if kind is None:
            raise TaskError(
                f"{task.path}: dataset.source {p.name}: use .jsonl, .json, .csv, .parquet "
                "or .txt (.jsonl.gz and .json.gz too)"
            )
        if kind == "text":
            return _read_text(task, p)
        return datasets.load_dataset(kind, data_files=str(p), split="train")
    if (p / split / "state.json").exists() or (p / split / "dataset_info.json").exists():
        return datasets.load_from_disk(str(p / split))
    if (p / "dataset_dict.json").exists():
        return datasets.load_from_disk(str(p))[split]
    if (p / "state.json").exists():
        return datasets.load_from_disk(str(p))
    raise TaskError(
        f"{task.path}: dataset.source {source!r} has no split {split!r} "
        f"(looked for a save_to_disk folder at {p / split})"
    )


def load_docs(task: Task) -> list[dict]:
    """The evaluated documents: the split, cut to ``limit`` (first N, as lm-eval's --limit)."""
    data = load_split(task)
    limit = task.spec.get("limit")
    n = len(data) if limit is None else min(int(limit), len(data))
    return _processed(task, [data[i] for i in range(n)])


def _processed(task: Task, docs: list[dict]) -> list[dict]:
    """The documents through the task's ``process_docs`` (lm-eval applies it to every
    split it reads), an error naming the task file and document where it fails."""
    from .task_functions import PROCESS_DOCS

    name = task.spec.get("process_docs")
    if name is None:
        return docs
    out = []
    for i, doc in enumerate(docs):
        try:
            out.append(PROCESS_DOCS[name](doc))
        except (KeyError, ValueError, TypeError) as e:
            raise TaskError(f"{task.path}: process_docs {name}: document {i}: {e!r}") from None
    return out


def fewshot_pool(task: Task) -> list[dict] | None:
    """The documents a task draws few-shot examples from, when they come from a split
    (its ``fewshot.split``, else the evaluated split, whole: no ``limit``); None when the
    task is zero-shot or its examples are inline ``samples``."""
    if not needs_pool(task):
        return None
    data = load_split(task, task.spec["fewshot"].get("split") or task.split)
    return _processed(task, [data[i] for i in range(len(data))])


def data_identity(task: Task, cache: FileHashCache) -> dict:
    """What decides a task's documents besides its definition, cheaply (the Snakefile
    asks on every parse): a local data file or folder is its content (sha256 of its
    files, cached by size and mtime, as for local checkpoints), so a file corrected in
    place changes it; a package's data is the package's version; a hub dataset is its
    ``revision``, already in the definition (``{}``)."""
    source = task.spec["dataset"]["source"]
    if source.startswith("hf:"):
        return {}
    if source.startswith("pkg:"):
        package = source[4:].partition("/")[0]
        return {"package": package, "version": package_version(package)}
    return {"sha256": content_sha256(_resolve_local(source, task.path), cache)}


@cache
def package_version(package: str) -> str | None:
    """The installed version of the distribution that ships import package ``package``."""
    from importlib import metadata

    for dist in metadata.packages_distributions().get(package, []):
        return metadata.version(dist)
    return None


def dataset_fingerprint(docs: list[dict]) -> str:
    """Hash of the rows actually used, in order."""
    return sha256_json(docs)


def shard_range(n_docs: int, shard: int, n_shards: int) -> range:
    """Shard ``shard`` of ``n_shards``: a contiguous, deterministic slice of doc ids."""
    if not 0 <= shard < n_shards:
        raise TaskError(f"shard {shard} outside 0..{n_shards - 1}")
    return range(n_docs * shard // n_shards, n_docs * (shard + 1) // n_shards)
