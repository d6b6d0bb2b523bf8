"""What one workflow job does: a batch of predictions, or of scores, for one model x
precision (see ``items``).

Each item's files are written on their own and atomically, so a failing item does
not cost the others: the job carries on, then fails naming every item that failed.
Its receipt (the Snakemake output) is written only when every item succeeded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from .. import progress
from ..atomic import write_json
from ..tasks.definitions import Task
from .items import InferJob, ScoreItem, ScoreJob

log = logging.getLogger(__name__)


class BatchError(RuntimeError):
    """A job's items that failed; ``causes``: their errors' types (a script prints a job
    whose every cause is a user's mistake without a Python stack). Types, not the
    errors: an error holds its traceback, and so the failed item's frames (a forward's
    tensors, on a GPU) for as long as the job runs."""

    def __init__(self, message: str, causes: tuple[type[BaseException], ...] = ()):
        super().__init__(message)
        self.causes = causes


def _run_all(work: list[tuple[str, Callable[[], object]]], receipt) -> None:
    """Run every (label, thunk); fail at the end, naming each one that failed."""
    t0 = time.monotonic()
    failed, causes = [], []
    for i, (label, thunk) in enumerate(work, 1):
        progress.item(i, len(work), label)
        try:
            thunk()
        except Exception as err:  # noqa: BLE001 - reported with its label, then re-raised below
            log.exception("%s failed", label)
            failed.append(f"{label}: {type(err).__name__}: {err}")
            causes.append(type(err))
    if failed:
        raise BatchError(
            f"{len(failed)} of {len(work)} items failed (the others are written "
            f"and will not be recomputed):\n  " + "\n  ".join(failed),
            tuple(causes),
        )
    write_json(
        receipt, {"items": [label for label, _ in work], "seconds": round(time.monotonic() - t0, 3)}
    )


def run_predictions(job: InferJob, receipt) -> None:
    """Load the model once (the job's backend), then predict every item (a task shard)."""
    from ..inference.api import load_backend
    from ..inference.joined import JoinedLM
    from ..inference.predictions import predict_shard
    from ..tasks.chat import renderer

    tasks = []
    for it in job.items:
        path = Path(job.workflow_dir) / it.task_path  # an absolute path stays as it is
        task = Task(it.spec["task"], it.spec, path)
        if task.hash != it.task_hash:
            raise BatchError(
                f"{path}: task definition changed since the DAG was built "
                f"(hash {task.hash}, planned {it.task_hash}); rerun snakemake"
            )
        tasks.append(task)
    if not tasks:  # written meanwhile (a retry after a partial run): nothing to load
        _run_all([], receipt)
        return
    lm, tokenizer, context = load_backend(job.backend, job.model_dir, job.precision, job.load)
    chat = None
    if (
        job.prompting.chat_template is not False
    ):  # before any work: a missing template names the entry
        chat = renderer(
            tokenizer, job.prompting.chat_template, f"models.{job.entry} ({job.model_dir})"
        )
    if job.request_store:  # answers computed before (by any job) are reused, request by request
        from ..inference.request_store import RequestStore, StoredLM

        where = (job.request_store, context.checkpoint_sha256, job.precision, lm.numerics)
        lm = StoredLM(lm, RequestStore(*where), RequestStore(*where, kind="generation"))
    lm = JoinedLM(lm)
    work = []
    for it, task in zip(job.items, tasks):
        shard = partial(
            predict_shard,
            lm,
            context,
            task,
            it.shard,
            it.n_shards,
            it.parquet,
            it.info,
            seed=job.seed,
            prompting=job.prompting,
            chat=chat,
        )
        work.append((f"{task.name} shard {it.shard}/{it.n_shards}", shard))
    work = _joined(work, job, tasks, lm, chat)
    with progress.status_line(f"infer {job.entry} {job.precision}"):
        _run_all(work, receipt)


def _joined(work, job: InferJob, tasks, lm, chat):
    """Consecutive small multiple-choice shards go to the engine in one call
    (``inference.joined``): the first of each run computes the run's requests first."""
    from ..inference.predictions import joined_runs, prefetch_run

    shards = [(task, it.shard, it.n_shards) for it, task in zip(job.items, tasks)]
    out = list(work)
    for run in joined_runs(shards):

        def first(run=run, thunk=work[run[0]][1]):
            started = time.time()  # the first shard's interval holds the joined call
            prefetch_run(lm, [shards[i] for i in run], job.prompting, chat)
            return thunk(started=started)

        out[run[0]] = (work[run[0]][0], first)
    return out


def run_scores(job: ScoreJob, receipt) -> None:
    from ..tasks.scoring import score

    def one(it: ScoreItem):
        r = score(
            list(it.parquets),
            list(it.infos),
            it.out,
            model=job.entry,
            metrics=list(it.metrics),
            primary_metric=it.primary_metric,
            code=it.code,
        )
        log.info("%s: %s", it.task, {k: round(v["value"], 4) for k, v in r["metrics"].items()})

    _run_all([(it.task, partial(one, it)) for it in job.items], receipt)
