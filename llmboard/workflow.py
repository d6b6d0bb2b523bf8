"""Turn a validated config into the workflow's targets (used by rules/common.smk).

Pure Python, no torch: the Snakefile imports it on every parse. Every path that
stands for a computation carries the hash of what decides its numbers, so a
changed task definition, model source or scoring code gets new files (and only
those are computed), even in a fresh checkout without ``.snakemake/`` metadata.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
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


@dataclass(frozen=True)
class Batch:
    """One job's worth of missing work for one model x precision.

    Snakemake 9 spends about 1 ms per job building a DAG, so a leaderboard of
    100 models x 50 tasks x 3 precisions cannot be one job per task (15,000 jobs,
    ~17 s before any work). Instead the plan looks at what is on disk and puts the
    *missing* predictions of a model x precision in one job: the model loads once,
    a new task schedules one job per model x precision that computes only it, and a
    killed job loses only the task it was on. Each task's files are still written
    on their own, atomically, under paths that carry their hashes.
    """
    id: str
    model: str
    precision: str
    part: str  # which part of the model x precision's work: "{shard slot}.{chunk}", "all"
    items: tuple  # infer: ((task, shard, n_shards), ...); score: (task, ...)


@dataclass
class Plan:
    models: dict  # name -> entry (with "key")
    precisions: dict  # model -> [precision]
    tasks: dict[str, Task]
    display: list[str]
    groups: dict = field(default_factory=dict)
    tasks_per_job: int = 0  # 0: every missing task of a model x precision in one job
    root: str = "."  # the workflow's working directory: what is on disk decides the jobs
    _exists: dict = field(default_factory=dict, repr=False, compare=False)  # path -> on disk

    def checkpoint_dir(self, model: str) -> str:
        return f"resources/checkpoints/{model}/{self.models[model]['key']}"

    def model_dir(self, model: str) -> str:
        return f"resources/models/{model}/{self.models[model]['key']}"

    def prediction_file(self, model: str, precision: str, task: str, shard: int, ext: str = "parquet") -> str:
        # the source key and the task hash in the path: other weights or another task
        # definition are other files, so what exists on disk is always current
        t, key = self.tasks[task], self.models[model]["key"]
        return f"results/predictions/{model}/{key}/{precision}/{task}/{t.hash}/{shard}-of-{t.shards}.{ext}"

    def prediction_files(self, model: str, precision: str, task: str, ext: str = "parquet") -> list[str]:
        return [self.prediction_file(model, precision, task, i, ext) for i in range(self.tasks[task].shards)]

    def score_file(self, model: str, precision: str, task: str) -> str:
        t, key = self.tasks[task], self.models[model]["key"]
        return f"results/scores/{model}/{key}/{precision}/{task}/{t.hash}-{scorer_version()}.json"

    def runs(self) -> list[tuple[str, str]]:
        return [(m, p) for m in sorted(self.models) for p in self.precisions[m]]

    def score_files(self) -> list[str]:
        return [self.score_file(m, p, t) for m, p in self.runs() for t in sorted(self.tasks)]

    def prediction_list(self) -> list[list]:
        """[model, precision, task, [parquets]] for every inference target (precision agreement)."""
        return [[m, p, t, self.prediction_files(m, p, t)] for m, p in self.runs() for t in sorted(self.tasks)]

    def board_prefix(self) -> str:
        return f"results/boards/{coverage_key(self.score_files())}/leaderboard"

    # ------------------------------------------------------------ jobs from disk state
    # A job is found again by (model, precision, part), not by its id: a job parsed again
    # on a cluster node, or retried after some of its items were written, then does what
    # is still missing. The id, the hash of the files it writes, keeps receipts apart.
    @staticmethod
    def infer_receipt(b: Batch) -> str:
        return f"results/predictions/{b.model}/{b.precision}/_jobs/{b.part}-{b.id}.json"

    @staticmethod
    def score_receipt(b: Batch) -> str:
        return f"results/scores/{b.model}/{b.precision}/_jobs/{b.part}-{b.id}.json"

    @cached_property
    def infer_jobs(self) -> dict[tuple, Batch]:
        """(model, precision, part) -> missing prediction shards. Shard i of every sharded
        task shares a job with the other tasks' shard i, so shards still spread over jobs
        (and GPUs) while each job loads its model once. With ``tasks_per_job``, chunks
        are cut from the full task list, so one chunk finishing never moves another."""
        jobs = {}
        for m, p in self.runs():
            parts: dict[str, list] = {}
            position: dict[int, int] = {}
            for t in sorted(self.tasks):
                n = self.tasks[t].shards
                for i in range(n):
                    pos = position[i] = position.get(i, -1) + 1
                    chunk = pos // self.tasks_per_job if self.tasks_per_job > 0 else 0
                    if not self._done(self.prediction_file(m, p, t, i),
                                      self.prediction_file(m, p, t, i, "json")):
                        parts.setdefault(f"{i}.{chunk}", []).append((t, i, n))
            for part, items in parts.items():
                files = [self.prediction_file(m, p, t, i, "json") for t, i, _ in items]
                jobs[(m, p, part)] = self._batch(m, p, part, items, files, self.infer_receipt)
        return jobs

    @cached_property
    def score_jobs(self) -> dict[tuple, Batch]:
        """(model, precision) -> missing score files: one job each (scoring is cheap)."""
        jobs = {}
        for m, p in self.runs():
            items = tuple(t for t in sorted(self.tasks) if not self._done(self.score_file(m, p, t)))
            if items:
                files = [self.score_file(m, p, t) for t in items]
                jobs[(m, p)] = self._batch(m, p, "all", items, files, self.score_receipt)
        return jobs

    def _done(self, *paths: str) -> bool:
        # each path is looked at once per parse: planning the jobs and listing their
        # consumers' inputs ask about the same 10^4 files
        for p in paths:
            if p not in self._exists:
                self._exists[p] = os.path.exists(os.path.join(self.root, p))
            if not self._exists[p]:
                return False
        return True

    def _batch(self, model: str, precision: str, part: str, items, files: list[str], receipt) -> Batch:
        """A receipt left by an earlier run of the same work (its files deleted since)
        would make Snakemake skip the job, so such an id moves on to the next free one."""
        for n in range(1000):
            b = Batch(short(sha256_json([files, n])), model, precision, part, tuple(items))
            if not self._done(receipt(b)):
                return b
        raise RuntimeError(f"{receipt(b)}: 1000 stale job receipts; remove {os.path.dirname(receipt(b))}")

    @cached_property
    def _pending_predictions(self) -> dict[tuple, list[str]]:
        """(model, precision, task) -> receipts of the jobs that compute its missing shards."""
        out: dict[tuple, list[str]] = {}
        for b in self.infer_jobs.values():
            for t, *_ in b.items:
                out.setdefault((b.model, b.precision, t), []).append(self.infer_receipt(b))
        return out

    def prediction_inputs(self, model: str, precision: str, tasks) -> list[str]:
        """What a consumer of these predictions waits for: the files that exist, and the
        receipts of the jobs that will write the others."""
        files: set[str] = set()
        for t in tasks:
            pending = self._pending_predictions.get((model, precision, t), [])
            files.update(pending)
            files.update(f for f in self.prediction_files(model, precision, t)
                         + self.prediction_files(model, precision, t, "json") if self._done(f))
        return sorted(files)

    def score_inputs(self) -> list[str]:
        """Score files that exist, and the receipts of the jobs that write the others."""
        pending = {(b.model, b.precision, t): self.score_receipt(b)
                   for b in self.score_jobs.values() for t in b.items}
        return sorted({pending.get((m, p, t)) or self.score_file(m, p, t)
                       for m, p in self.runs() for t in sorted(self.tasks)})

    def agreement_inputs(self) -> list[str]:
        return sorted({f for m, p in self.runs() for f in self.prediction_inputs(m, p, self.tasks)})

    def infer_items(self, model: str, precision: str, part: str, workflow_dir: str) -> list[dict]:
        """What an inference job needs per item still missing: the task (its path relative
        to the workflow when inside it, so moving the checkout changes nothing), the shard
        and the output files."""
        b = self.infer_jobs.get((model, precision, part))
        out = []
        for t, i, n in b.items if b else ():
            task = self.tasks[t]
            path = os.path.relpath(task.path, workflow_dir)
            out.append({"path": str(task.path) if path.startswith("..") else path,
                        "hash": task.hash, "spec": task.spec, "shard": i, "n_shards": n,
                        "parquet": self.prediction_file(model, precision, t, i),
                        "info": self.prediction_file(model, precision, t, i, "json")})
        return out

    def score_tasks(self, model: str, precision: str) -> tuple:
        b = self.score_jobs.get((model, precision))
        return b.items if b else ()

    def score_items(self, model: str, precision: str) -> list[dict]:
        return [{"task": t, "parquets": self.prediction_files(model, precision, t),
                 "infos": self.prediction_files(model, precision, t, "json"),
                 "out": self.score_file(model, precision, t),
                 "metrics": list(self.tasks[t].metrics), "primary_metric": self.tasks[t].primary_metric}
                for t in self.score_tasks(model, precision)]


def build_plan(config: dict, tasks_dir: str | os.PathLike, root: str | os.PathLike = ".") -> Plan:
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
    tasks_per_job = int((config.get("inference") or {}).get("tasks_per_job") or 0)
    return Plan(models, precisions, tasks, display, groups, tasks_per_job, str(root))

