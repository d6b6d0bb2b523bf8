"""The workflow plan: settings and what is on disk -> the jobs a run needs
(used by rules/common.smk).

Pure Python, no torch: the Snakefile imports it on every parse. Every path that
stands for a computation carries the hash of what decides its numbers (see
``layout``), so a changed task definition, model source or scoring code gets new
files (and only those are computed), even in a fresh checkout without
``.snakemake/`` metadata.

Jobs are batches of missing work. Snakemake 9 spends about 1 ms per job building a
DAG, so a leaderboard of 100 models x 50 tasks x 3 precisions cannot be one job per
task (15,000 jobs, ~17 s before any work). Instead the plan looks at what is on disk
and puts the *missing* predictions of a model x precision in one job: the model loads
once, a new task schedules one job per model x precision that computes only it, and
a killed job loses only the task it was on. Each task's files are still written on
their own, atomically, under paths that carry their hashes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from ..atomic import atomic_path
from ..checkpoints.identity import FileHashCache, content_sha256
from ..checkpoints.sources import SourceError, parse_source
from ..hashing import sha256_json, short
from ..inference.api import LoadOptions, check_backend
from ..settings import ModelEntry, Settings, SettingsError
from ..tasks.chat import choose, templates_of
from ..tasks.definitions import Task, find_task_files, group_spec, is_group, load_task
from ..tasks.documents import data_identity
from ..tasks.errors import TaskError
from ..tasks.scoring import scorer_version
from . import layout
from .items import InferBatch, InferItem, InferJob, ScoreBatch, ScoreItem, ScoreJob, TaskShard


def coverage_key(score_files: list[str]) -> str:
    """Names the exact set of scores a leaderboard covers (its inputs' identity)."""
    return short(sha256_json(sorted(score_files)))


@dataclass
class WorkflowPlan:
    models: dict[str, ModelEntry]
    keys: dict[str, str]  # model -> source key (what decides the weights)
    tasks: dict[str, Task]
    display: list[str]
    groups: dict = field(default_factory=dict)
    tasks_per_job: int = 0  # 0: every missing task of a model x precision in one job
    root: str = "."  # the workflow's working directory: what is on disk decides the jobs
    settings: Settings | None = None  # how jobs run (None: a plan that only lists files)
    # task -> its key in prediction and score paths: the definition's hash and what its
    # documents are (documents.data_identity), so corrected data re-runs the task
    task_keys: dict[str, str] = field(default_factory=dict)
    _exists: dict = field(default_factory=dict, repr=False, compare=False)  # path -> on disk

    def __post_init__(self):
        # Entries with the same weights (source key, files fetched, remote code) share one
        # fetch and one conversion: their folders are named by the first such entry.
        # Predictions and scores are each entry's own, under its run key: the source key
        # for raw prompts (paths as before prompting existed), else the hash of the
        # source key and the prompting settings.
        first: dict = {}
        self.owners: dict[str, str] = {}
        self.run_keys: dict[str, str] = {}
        for name in sorted(self.models):
            m = self.models[name]
            weights = (self.keys[name], m.allow_patterns, m.trust_remote_code)
            self.owners[name] = first.setdefault(weights, name)
            p = m.prompting
            self.run_keys[name] = (
                self.keys[name]
                if p.is_raw
                else short(sha256_json({"weights": self.keys[name], "prompting": p.as_dict()}))
            )

    # ------------------------------------------------------------ concrete paths
    def weights_owner(self, model: str) -> str:
        """The entry whose name the shared checkpoint and model folders carry."""
        return self.owners[model]

    def checkpoint_dir(self, model: str) -> str:
        return layout.fill(layout.CHECKPOINT_DIR, model=self.owners[model], key=self.keys[model])

    def model_dir(self, model: str) -> str:
        return layout.fill(layout.MODEL_DIR, model=self.owners[model], key=self.keys[model])

    def prompting_labels(self) -> dict[str, str]:
        """model -> how its prompts are rendered (``raw``, ``chat+multiturn``, ...)."""
        return {m: e.prompting.label for m, e in sorted(self.models.items())}

    def prediction_file(
        self, model: str, precision: str, task: str, shard: int, ext: str = "parquet"
    ) -> str:
        t = self.tasks[task]
        return layout.fill(
            layout.PREDICTION,
            model=model,
            key=self.run_keys[model],
            precision=precision,
            task=task,
            task_key=self.task_keys[task],
            shard=shard,
            n_shards=t.shards,
            ext=ext,
        )

    def prediction_files(
        self, model: str, precision: str, task: str, ext: str = "parquet"
    ) -> list[str]:
        return [
            self.prediction_file(model, precision, task, i, ext)
            for i in range(self.tasks[task].shards)
        ]

    def score_file(self, model: str, precision: str, task: str) -> str:
        return layout.fill(
            layout.SCORE,
            model=model,
            key=self.run_keys[model],
            precision=precision,
            task=task,
            task_key=self.task_keys[task],
            scorer=self.scorer_key(task),
        )

    def code_settings(self, task: str) -> dict | None:
        """The sandbox's settings a code task is scored with (None: not a code task)."""
        if not self.tasks[task].runs_code or self.settings is None:
            return None
        return self.settings.sandbox()

    def scorer_key(self, task: str) -> str:
        """The scorer version, and for a code task the sandbox's limits too: a new
        timeout re-scores (programs run again), with no inference."""
        code = self.code_settings(task)
        if not code:
            return scorer_version()
        return short(sha256_json({"scorer": scorer_version(), "code_execution": code}), 8)

    def runs(self) -> list[tuple[str, str]]:
        return [(m, p) for m in sorted(self.models) for p in self.models[m].precisions]

    @property
    def precision_names(self) -> list[str]:
        return sorted({p for m in self.models.values() for p in m.precisions})

    def score_files(self) -> list[str]:
        return [self.score_file(m, p, t) for m, p in self.runs() for t in sorted(self.tasks)]

    def prediction_list(self) -> list[list]:
        """[model, precision, task, [parquets]] for every inference target (precision agreement)."""
        return [
            [m, p, t, self.prediction_files(m, p, t)]
            for m, p in self.runs()
            for t in sorted(self.tasks)
        ]

    def score_list(self) -> list[list]:
        """[model, precision, task, score file] for every score (precision agreement)."""
        return [
            [m, p, t, self.score_file(m, p, t)] for m, p in self.runs() for t in sorted(self.tasks)
        ]

    @cached_property
    def coverage(self) -> str:
        return coverage_key(self.score_files())

    def board_files(self, table: str, exts) -> list[str]:
        prefix = layout.fill(layout.BOARD, coverage=self.coverage, table=table)
        return [prefix + ext for ext in exts]

    def record_coverage(self) -> str:
        """The file that names the board now published (``layout.COVERAGE``), rewritten
        only when the plan's coverage differs from it. The published copies depend on it:
        going back to a board built before (a task removed again, say) has boards older
        than the published copies, and Snakemake, triggered by modification times, would
        leave the other board published."""
        path = os.path.join(self.root, layout.COVERAGE)
        try:
            current = Path(path).read_text().strip()
        except OSError:
            current = None
        if current != self.coverage:
            with atomic_path(path) as tmp:
                tmp.write_text(self.coverage + "\n")
        return layout.COVERAGE

    @staticmethod
    def published_files(table: str, exts) -> list[str]:
        return [layout.fill(layout.PUBLISHED, table=table) + ext for ext in exts]

    # ------------------------------------------------------------ jobs from disk state
    # A job is found again by (model, precision, part), not by its id: a job parsed again
    # on a cluster node, or retried after some of its items were written, then does what
    # is still missing. The id, the hash of the files it writes, keeps receipts apart.
    @staticmethod
    def infer_receipt(b: InferBatch) -> str:
        return layout.fill(
            layout.INFER_RECEIPT, model=b.model, precision=b.precision, part=b.part, batch=b.id
        )

    @staticmethod
    def score_receipt(b: ScoreBatch) -> str:
        return layout.fill(
            layout.SCORE_RECEIPT, model=b.model, precision=b.precision, part=b.part, batch=b.id
        )

    @cached_property
    def infer_jobs(self) -> dict[tuple, InferBatch]:
        """(model, precision, part) -> missing prediction shards. Shard i of every sharded
        task shares a job with the other tasks' shard i, so shards still spread over jobs
        (and GPUs) while each job loads its model once. With ``tasks_per_job``, chunks
        are cut from the full task list, so one chunk finishing never moves another."""
        jobs = {}
        for m, p in self.runs():
            parts: dict[str, list[TaskShard]] = {}
            position: dict[int, int] = {}
            for t in sorted(self.tasks):
                n = self.tasks[t].shards
                for i in range(n):
                    pos = position[i] = position.get(i, -1) + 1
                    chunk = pos // self.tasks_per_job if self.tasks_per_job > 0 else 0
                    if not self._done(
                        self.prediction_file(m, p, t, i), self.prediction_file(m, p, t, i, "json")
                    ):
                        parts.setdefault(layout.part_name(i, chunk), []).append(TaskShard(t, i, n))
            for part, items in parts.items():
                files = [self.prediction_file(m, p, t, i, "json") for t, i, _ in items]
                jobs[(m, p, part)] = self._batch(
                    InferBatch, m, p, part, items, files, self.infer_receipt
                )
        return jobs

    @cached_property
    def score_jobs(self) -> dict[tuple, ScoreBatch]:
        """(model, precision) -> missing score files: one job each (scoring is cheap)."""
        jobs = {}
        for m, p in self.runs():
            items = [t for t in sorted(self.tasks) if not self._done(self.score_file(m, p, t))]
            if items:
                files = [self.score_file(m, p, t) for t in items]
                jobs[(m, p)] = self._batch(
                    ScoreBatch, m, p, layout.PART_ALL, items, files, self.score_receipt
                )
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

    def _batch(self, cls, model: str, precision: str, part: str, items, files: list[str], receipt):
        """A receipt left by an earlier run of the same work (its files deleted since)
        would make Snakemake skip the job, so such an id moves on to the next free one."""
        for n in range(1000):
            b = cls(short(sha256_json([files, n])), model, precision, part, tuple(items))
            if not self._done(receipt(b)):
                return b
        raise RuntimeError(
            f"{receipt(b)}: 1000 stale job receipts; remove {os.path.dirname(receipt(b))}"
        )

    @cached_property
    def _pending_predictions(self) -> dict[tuple, list[str]]:
        """(model, precision, task) -> receipts of the jobs that compute its missing shards."""
        out: dict[tuple, list[str]] = {}
        for b in self.infer_jobs.values():
            for item in b.items:
                out.setdefault((b.model, b.precision, item.task), []).append(self.infer_receipt(b))
        return out

    def prediction_inputs(self, model: str, precision: str, tasks) -> list[str]:
        """What a consumer of these predictions waits for: the files that exist, and the
        receipts of the jobs that will write the others."""
        files: set[str] = set()
        for t in tasks:
            files.update(self._pending_predictions.get((model, precision, t), []))
            files.update(
                f
                for f in self.prediction_files(model, precision, t)
                + self.prediction_files(model, precision, t, "json")
                if self._done(f)
            )
        return sorted(files)

    def score_inputs(self) -> list[str]:
        """Score files that exist, and the receipts of the jobs that write the others."""
        pending = {
            (b.model, b.precision, t): self.score_receipt(b)
            for b in self.score_jobs.values()
            for t in b.items
        }
        return sorted(
            {
                pending.get((m, p, t)) or self.score_file(m, p, t)
                for m, p in self.runs()
                for t in sorted(self.tasks)
            }
        )

    def agreement_inputs(self) -> list[str]:
        return sorted({f for m, p in self.runs() for f in self.prediction_inputs(m, p, self.tasks)})

    def infer_items(
        self, model: str, precision: str, part: str, workflow_dir: str
    ) -> list[InferItem]:
        """What an inference job needs per task shard still missing."""
        b = self.infer_jobs.get((model, precision, part))
        out = []
        for t, i, n in b.items if b else ():
            task = self.tasks[t]
            path = os.path.relpath(task.path, workflow_dir)
            out.append(
                InferItem(
                    str(task.path) if path.startswith("..") else path,
                    task.hash,
                    task.spec,
                    i,
                    n,
                    self.prediction_file(model, precision, t, i),
                    self.prediction_file(model, precision, t, i, "json"),
                )
            )
        return out

    def infer_job(self, model: str, precision: str, part: str, workflow_dir: str) -> InferJob:
        """The whole of one inference job, as the rule hands it to its script."""
        s, inf = self.settings, self.settings.inference
        entry = self.models[model]
        return InferJob(
            entry=model,
            precision=precision,
            model_dir=self.model_dir(model),
            backend=inf.backend,
            load=LoadOptions.of(inf, entry.trust_remote_code),
            prompting=entry.prompting,
            items=tuple(self.infer_items(model, precision, part, workflow_dir)),
            workflow_dir=str(workflow_dir),
            seed=s.seed,
            request_store=s.request_store,
            local_gpus=s.resources.local_gpus,
            log_level=s.log_level,
        )

    def score_job(self, model: str, precision: str) -> ScoreJob:
        return ScoreJob(
            model, precision, tuple(self.score_items(model, precision)), self.settings.log_level
        )

    def score_tasks(self, model: str, precision: str) -> tuple[str, ...]:
        b = self.score_jobs.get((model, precision))
        return b.items if b else ()

    def score_items(self, model: str, precision: str) -> list[ScoreItem]:
        return [
            ScoreItem(
                t,
                tuple(self.prediction_files(model, precision, t)),
                tuple(self.prediction_files(model, precision, t, "json")),
                self.score_file(model, precision, t),
                tuple(self.tasks[t].metrics),
                self.tasks[t].primary_metric,
                self.code_settings(t),
            )
            for t in self.score_tasks(model, precision)
        ]


def source_keys(
    settings: Settings, root: str | os.PathLike, cache: FileHashCache
) -> dict[str, str]:
    """model -> source key. A local (or package) checkpoint is keyed by its content too,
    so a changed file under the same path is fetched, converted and evaluated again;
    file hashes are cached by size and mtime, so an unchanged source costs a stat."""
    keys = {}
    for name, m in settings.models.items():
        src = parse_source(m.source_fields(), name)
        if src.is_on_disk:
            try:
                path = src.local_path(root)
            except SourceError as e:
                raise SourceError(f"config: models.{name}.source: {e}") from None
            src = replace(src, content=content_sha256(path, cache))
        keys[name] = src.key()
    return keys


def task_key(task: Task, data: dict) -> str:
    """A task's key in result paths: its definition's hash and its data's identity."""
    return short(sha256_json({"task": task.hash, "data": data}))


def build_plan(
    settings: Settings, tasks_dir: str | os.PathLike, root: str | os.PathLike = "."
) -> WorkflowPlan:
    index = find_task_files(tasks_dir)
    check_backend(settings.inference.backend, "config: inference.backend")
    cache = FileHashCache(Path(root) / layout.FILE_HASH_CACHE)
    keys = source_keys(settings, root, cache)
    tasks: dict[str, Task] = {}
    groups: dict = {}
    display = []
    for name, overrides in settings.tasks.items():
        if name not in index:
            raise TaskError(
                f"config: tasks.{name}: no task or group of that name in {tasks_dir} "
                f"(known: {', '.join(sorted(index)[:12])}, ...)"
            )
        display.append(name)
        if is_group(index[name]):
            groups[name] = group_spec(index[name])
            members = [t for ms in groups[name]["subgroups"].values() for t in ms]
        else:
            members = [name]
        for t in members:
            if t not in index:
                raise TaskError(f"{index[name]}: member task {t!r} not found")
            tasks[t] = load_task(index[t], overrides)
    plan = WorkflowPlan(
        dict(settings.models),
        keys,
        tasks,
        display,
        groups,
        settings.inference.tasks_per_job,
        str(root),
        settings,
        {t: task_key(task, data_identity(task, cache)) for t, task in tasks.items()},
    )
    cache.save()
    check_code_execution(settings, tasks, index)
    check_chat_templates(plan, root)
    return plan


def check_code_execution(settings: Settings, tasks: dict[str, Task], index: dict) -> None:
    """A code task runs model-generated programs: refused, before any job, unless the
    config allows it (lm-eval's --confirm_run_unsafe_code)."""
    unsafe = sorted(t for t, task in tasks.items() if task.runs_code)
    if unsafe and not settings.code_execution["allow_code_execution"]:
        raise SettingsError(
            f"config: code_execution.allow_code_execution: task(s) {', '.join(unsafe)} "
            f"({index[unsafe[0]]}) run model-generated code to score it; set "
            "code_execution: {allow_code_execution: true} to allow it (each program runs "
            "in the sandbox, see docs/tasks.md)"
        )


def check_chat_templates(plan: WorkflowPlan, root: str | os.PathLike = ".") -> None:
    """Every entry's ``chat_template`` against the templates its tokenizer carries, read
    from the converted model, else the fetched checkpoint, else an on-disk source (a
    GGUF header or a tokenizer folder), so that a missing or unknown template is an
    error naming the entry before any job starts. A hub source not fetched yet cannot
    be read here: its inference job checks when it loads the tokenizer."""
    for name, m in sorted(plan.models.items()):
        chat = m.prompting.chat_template
        if chat is False:
            continue
        places = [Path(root) / plan.model_dir(name), Path(root) / plan.checkpoint_dir(name)]
        src = parse_source(m.source_fields(), name)
        if src.is_on_disk:
            places.append(src.local_path(root))
        for place in places:
            templates = templates_of(place)
            if templates is not None:
                choose(templates, chat, f"config: models.{name} ({place})")
                break
