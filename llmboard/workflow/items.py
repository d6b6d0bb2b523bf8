"""The job contract: what the plan hands a job, as small frozen dataclasses.

A job is one value (``InferJob``, ``ScoreJob``) built by the plan: adding a setting to
a job is one field here and one line in the plan. Snakemake passes ``params`` to a
rule script by pickling them before the script can import this package, so rules pass
``as_params(job)`` (plain dicts) and scripts rebuild the job with ``Job.from_params``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

from ..inference.api import LoadOptions
from ..settings import Prompting


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
    code: dict | None = None  # a code task's sandbox settings (config: code_execution)


@dataclass(frozen=True)
class InferJob:
    """Everything one inference job needs: which entry at which precision, the task
    shards it predicts, how its backend loads the model, and how the job runs."""

    entry: str  # the config's model entry (its name is in log messages and errors)
    precision: str
    model_dir: str  # the converted model (the rule's input)
    backend: str  # api.BACKENDS name
    load: LoadOptions
    prompting: Prompting
    items: tuple[InferItem, ...]
    workflow_dir: str  # task paths in items are relative to it
    seed: int
    request_store: str | None  # its folder; None: off
    local_gpus: int | tuple[int, ...] | None  # GPUs a local run may lock
    log_level: str

    @classmethod
    def from_params(cls, d: dict) -> InferJob:
        d = dict(d)
        d["load"] = LoadOptions(**d["load"])
        d["prompting"] = Prompting(**d["prompting"])
        d["items"] = tuple(_item(InferItem, i) for i in d["items"])
        if isinstance(d["local_gpus"], list):
            d["local_gpus"] = tuple(d["local_gpus"])
        return cls(**d)


@dataclass(frozen=True)
class ScoreJob:
    """One score job: the score files of a model x precision still missing."""

    entry: str
    precision: str
    items: tuple[ScoreItem, ...]
    log_level: str

    @classmethod
    def from_params(cls, d: dict) -> ScoreJob:
        return cls(**{**d, "items": tuple(_item(ScoreItem, i) for i in d["items"])})


def as_params(job) -> dict:
    """A job as plain dicts, lists and scalars (what Snakemake can pickle for a script)."""
    return asdict(job)


def _item(cls, d: dict):
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
