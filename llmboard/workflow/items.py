"""The job contract: what the plan hands a job, as small frozen dataclasses.

Snakemake passes ``params`` to a rule script by pickling them before the script can
import this package, so rules pass ``as_params(item)`` (plain dicts) and scripts
rebuild the items with ``from_params``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple


class TaskShard(NamedTuple):
    task: str
    shard: int
    n_shards: int


@dataclass(frozen=True)
class InferBatch:
    """One inference job: the missing task shards of a model x precision (one model load)."""

    id: str  # hash of the files it writes: keeps receipts of different work apart
    model: str
    precision: str
    part: str  # layout.part_name(shard slot, chunk)
    items: tuple[TaskShard, ...]


@dataclass(frozen=True)
class ScoreBatch:
    """One score job: the missing score files of a model x precision."""

    id: str
    model: str
    precision: str
    part: str  # always layout.PART_ALL: scoring is cheap
    items: tuple[str, ...]  # task names


@dataclass(frozen=True)
class InferItem:
    """One task shard to predict, and where its two files go."""

    task_path: str  # relative to the workflow when inside it: moving the checkout changes nothing
    task_hash: str  # as planned; a job refuses a task file edited since
    spec: dict  # the resolved task definition
    shard: int
    n_shards: int
    parquet: str
    info: str


@dataclass(frozen=True)
class ScoreItem:
    """One score file to compute from the prediction shards of a task."""

    task: str
    parquets: tuple[str, ...]
    infos: tuple[str, ...]
    out: str
    metrics: tuple[str, ...]
    primary_metric: str


def as_params(items) -> list[dict]:
    return [asdict(it) for it in items]


def from_params(cls, dicts) -> list:
    return [cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}) for d in dicts]
