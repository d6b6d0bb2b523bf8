"""One task shard through a loaded model -> predictions.

Writes ``{shard}.parquet`` (one row per request, nothing scored) and
``{shard}.json`` (how it was computed: placement, peak memory, budget, timings,
provenance). Both are written atomically; the JSON last, so a present JSON means
complete predictions.
"""

from __future__ import annotations

import logging
import os
import resource
import time

from ..atomic import atomic_path, write_json
from ..hashing import sha256_file
from ..provenance import code_provenance, now_utc
from ..settings import RAW, Prompting
from ..tasks.definitions import LOGLIKELIHOOD, ROLLING, Task
from ..tasks.documents import dataset_fingerprint, fewshot_pool, load_docs, shard_range
from ..tasks.prompts import (
    build_generation_requests,
    build_loglikelihood_requests,
    build_requests,
    build_rolling_requests,
)
from .api import LM, GenerationRequest, LoglikelihoodRequest, ModelContext, Sampling, sample_seed
from .joined import JOIN_DOCS
from .joined import SECONDS as JOINED_SECONDS

log = logging.getLogger(__name__)

# one row per request; nothing scored
PREDICTION_COLUMNS = {
    "doc_id": "Int64",
    "choice": "Int32",
    "n_choices": "Int32",
    "gold": "Int32",
    "choice_chars": "Int32",
    "ctx_tokens": "Int32",
    "cont_tokens": "Int32",
    "loglikelihood": "Float64",
    "is_greedy": "Boolean",
    "context": "String",
    "continuation": "String",
    "from_store": "Boolean",  # answered by the request store (computed by an earlier job)
}
# generation tasks: one row per document; the raw generation, scored by filters later
GENERATION_COLUMNS = {
    "doc_id": "Int64",
    "context": "String",
    "until": "List(String)",
    "max_gen_toks": "Int32",
    "ctx_tokens": "Int32",
    "generation": "String",  # cut before the first stop string, as lm-eval returns it
    "gen_tokens": "Int32",
    "stop_reason": "String",  # until, eos, max_gen_toks or window
    "targets": "List(String)",
    "from_store": "Boolean",
    # JSON of the document fields the scoring reads (math's solution, code's prompt);
    # only in the files of tasks that need it
    "doc_fields": "String",
    # a sampling task: one row per (document, repeat); only in such tasks' files
    "repeat": "Int32",
    "seed": "Int64",  # the (document, repeat)'s sampling seed (api.sample_seed)
}
# loglikelihood_rolling: one row per document; words and bytes are counted at scoring time
ROLLING_COLUMNS = {
    "doc_id": "Int64",
    "text": "String",  # the scored text (doc_to_target)
    "tokens": "Int32",  # tokens scored (all of the text's)
    "windows": "Int32",  # lm-eval's disjoint rolling windows
    "max_length": "Int32",  # the window size used: min(task max_length, the model's)
    "loglikelihood": "Float64",  # summed over the windows
    "from_store": "Boolean",
}


def _polars_schema(columns: dict) -> dict:
    import polars as pl

    def dtype(name: str):
        if name.startswith("List("):
            return pl.List(getattr(pl, name[5:-1]))
        return getattr(pl, name)

    return {k: dtype(v) for k, v in columns.items()}


def peak_memory() -> dict:
    import torch

    out = {"host_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            out[f"cuda:{i}_peak_mb"] = round(torch.cuda.max_memory_allocated(i) / 2**20, 1)
    return out


def predict_shard(
    lm: LM,
    model: ModelContext,
    task: Task,
    shard: int,
    n_shards: int,
    out_parquet,
    out_json,
    *,
    seed: int,
    prompting: Prompting = RAW,
    chat=None,
    started: float | None = None,
) -> dict:
    """Every request of one task shard through ``lm.loglikelihood`` (multiple choice) or
    ``lm.generate_until`` (generation tasks); write the two files. ``prompting`` says how
    prompts are rendered; ``chat`` (``tasks.chat.renderer``) renders a chat template.
    ``started``: when its work began, if before this call (a job's joined call)."""
    import torch

    torch.manual_seed(seed)
    started = time.time() if started is None else started
    docs, pool = shard_docs(task)
    ids = list(shard_range(len(docs), shard, n_shards))
    log.info("task %s (%s) shard %d/%d: %d docs", task.name, task.hash, shard, n_shards, len(ids))
    budget, stats_before = lm.token_budget, dict(lm.stats)
    t1 = time.monotonic()
    if task.output_type == "generate_until":
        table = _generate(lm, task, ids, docs, pool, prompting, chat)
    elif task.output_type == ROLLING:
        table = _rolling(lm, task, ids, docs)
    else:
        table = _loglikelihoods(lm, task, ids, docs, pool, prompting, chat)
    n_requests = table.height
    engine_stats = {k: v - stats_before.get(k, 0) for k, v in lm.stats.items()}
    # a shard answered from a job's joined call is charged its share of that call
    t_infer = time.monotonic() - t1 + engine_stats.pop(JOINED_SECONDS, 0.0)
    with atomic_path(out_parquet) as tmp:
        table.write_parquet(tmp)
        parquet_sha256, parquet_bytes = sha256_file(tmp), tmp.stat().st_size
    info = {
        "model_dir": str(model.model_dir),
        "checkpoint_sha256": model.checkpoint_sha256,
        "precision": model.precision,
        "task": task.name,
        "task_hash": task.hash,
        "task_definition": task.spec,
        # how prompts were rendered (chat template, system instruction, multi-turn)
        "prompting": {**prompting.as_dict(), "label": prompting.label},
        "n_docs_total": len(docs),
        "dataset_fingerprint": dataset_fingerprint(docs),
        "shard": shard,
        "n_shards": n_shards,
        "doc_ids": [ids[0], ids[-1] + 1] if ids else [0, 0],
        "n_requests": n_requests,
        # the parquet as written: scoring and `llmboard verify` refuse a file that differs
        "parquet_sha256": parquet_sha256,
        "parquet_bytes": parquet_bytes,
        "token_budget": budget,
        "final_token_budget": lm.token_budget,
        # the engine's numeric form; "-bi": batch-invariant (inference.batch_invariant)
        "numerics": lm.numerics,
        "seed": seed,
        "device_map": model.placement,
        "peak_memory": peak_memory(),
        "engine_stats": engine_stats,
        "seconds": {"load": round(model.load_seconds, 3), "inference": round(t_infer, 3)},
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "interval": [started, time.time()],
        "finished": now_utc(),
        **code_provenance(),
    }
    write_json(out_json, info)
    log.info("wrote %s (%d rows) in %.1f s inference", out_parquet, n_requests, t_infer)
    return info


def joinable(task: Task) -> bool:
    """Whether a shard of ``task`` can share a job's joined call (``joined.py``)."""
    return task.output_type not in ("generate_until", ROLLING)


def shard_docs(task: Task) -> tuple[list[dict], list[dict] | None]:
    return load_docs(task), fewshot_pool(task)


def shard_requests(
    task: Task, shard: int, n_shards: int, prompting: Prompting = RAW, chat=None
) -> list[LoglikelihoodRequest]:
    """A multiple-choice (or loglikelihood) shard's requests, as ``predict_shard`` makes them."""
    docs, pool = shard_docs(task)
    ids = list(shard_range(len(docs), shard, n_shards))
    return [
        LoglikelihoodRequest(r["context"], r["continuation"])
        for r in _loglikelihood_rows(task, docs, ids, pool, prompting, chat)
    ]


def joined_runs(shards: list[tuple[Task, int, int]]) -> list[list[int]]:
    """Runs (two or more) of consecutive joinable shards (task, shard, n_shards) whose
    documents add up to at most ``joined.JOIN_DOCS``: each run is one engine call."""
    runs: list[list[int]] = [[]]
    docs_in_run = 0
    for i, (task, shard, n_shards) in enumerate(shards):
        n = None
        if joinable(task):
            try:
                n = len(shard_range(len(load_docs(task)), shard, n_shards))
            except Exception:  # noqa: BLE001 - the shard reports its own error when it runs
                pass
        if n is None or n > JOIN_DOCS:  # on its own: ends the run before it
            runs.append([])
            docs_in_run = 0
            continue
        if docs_in_run + n > JOIN_DOCS:
            runs.append([])
            docs_in_run = 0
        runs[-1].append(i)
        docs_in_run += n
    return [r for r in runs if len(r) > 1]


def prefetch_run(lm, shards: list[tuple[Task, int, int]], prompting: Prompting = RAW, chat=None):
    """One engine call for the requests of ``shards`` (``joined.JoinedLM.prefetch``); a
    shard whose requests cannot be built is left to fail on its own, and a failed call
    leaves each shard to run on its own."""
    requests = []
    for task, shard, n_shards in shards:
        try:
            requests += shard_requests(task, shard, n_shards, prompting, chat)
        except Exception:  # noqa: BLE001 - reported by that shard's own run
            continue
    try:
        lm.prefetch(requests)
    except Exception as err:  # noqa: BLE001 - each shard then runs on its own
        log.warning("joined call of %d shards failed (%s): each runs on its own", len(shards), err)


def _loglikelihood_rows(task: Task, docs, ids, pool, prompting, chat) -> list[dict]:
    build = build_loglikelihood_requests if task.output_type == LOGLIKELIHOOD else build_requests
    return build(task, docs, ids, prompting, chat, pool=pool)


def _loglikelihoods(lm: LM, task: Task, ids: list[int], docs: list[dict], pool, prompting, chat):
    """One row per (document, choice): the request and its log-likelihood."""
    import polars as pl

    rows = _loglikelihood_rows(task, docs, ids, pool, prompting, chat)
    results = lm.loglikelihood(
        [LoglikelihoodRequest(r["context"], r["continuation"]) for r in rows]
    )
    return pl.DataFrame(
        {
            "doc_id": [r["doc_id"] for r in rows],
            "choice": [r["choice"] for r in rows],
            "n_choices": [r["n_choices"] for r in rows],
            "gold": [r["gold"] for r in rows],
            "choice_chars": [r["choice_chars"] for r in rows],
            "ctx_tokens": [x.context_tokens for x in results],
            "cont_tokens": [x.continuation_tokens for x in results],
            "loglikelihood": [x.loglikelihood for x in results],
            "is_greedy": [x.is_greedy for x in results],
            "context": [r["context"] for r in rows],
            "continuation": [r["continuation"] for r in rows],
            "from_store": [x.from_store for x in results],
        },
        schema=_polars_schema(PREDICTION_COLUMNS),
    )


def _rolling(lm: LM, task: Task, ids: list[int], docs: list[dict]):
    """One row per document: the text and its log-likelihood over lm-eval's windows."""
    import polars as pl

    rows = build_rolling_requests(task, docs, ids)
    window = lm.window(task.max_length)
    results = lm.loglikelihood_rolling([r["text"] for r in rows], task.max_length)
    return pl.DataFrame(
        {
            "doc_id": [r["doc_id"] for r in rows],
            "text": [r["text"] for r in rows],
            "tokens": [x.tokens for x in results],
            "windows": [x.windows for x in results],
            "max_length": [window] * len(rows),
            "loglikelihood": [x.loglikelihood for x in results],
            "from_store": [x.from_store for x in results],
        },
        schema=_polars_schema(ROLLING_COLUMNS),
    )


def _generate(lm: LM, task: Task, ids: list[int], docs: list[dict], pool, prompting, chat):
    """One row per document: the prompt, the raw generation and why it stopped."""
    import polars as pl

    base = build_generation_requests(task, docs, ids, prompting, chat, pool=pool)
    sampling = task.sampling
    if sampling is None:
        rows = [{**r, "sampling": None} for r in base]
    else:  # one request per (document, repeat), each with its own seed
        params = {k: v for k, v in sampling.items() if k != "seed"}
        rows = [
            {
                **r,
                "repeat": k,
                "sampling": Sampling(**params, seed=sample_seed(sampling["seed"], r["doc_id"], k)),
            }
            for r in base
            for k in range(task.repeats)
        ]
    results = lm.generate_until(
        [
            GenerationRequest(r["context"], tuple(r["until"]), r["max_gen_toks"], r["sampling"])
            for r in rows
        ]
    )
    columns = {
        "doc_id": [r["doc_id"] for r in rows],
        "context": [r["context"] for r in rows],
        "until": [list(r["until"]) for r in rows],
        "max_gen_toks": [r["max_gen_toks"] for r in rows],
        "ctx_tokens": [g.context_tokens for g in results],
        "generation": [g.text for g in results],
        "gen_tokens": [g.tokens for g in results],
        "stop_reason": [g.stop_reason for g in results],
        "targets": [list(r["targets"]) for r in rows],
        "from_store": [g.from_store for g in results],
    }
    if rows and "doc_fields" in rows[0]:
        columns["doc_fields"] = [r["doc_fields"] for r in rows]
    if sampling is not None:
        columns["repeat"] = [r["repeat"] for r in rows]
        columns["seed"] = [r["sampling"].seed for r in rows]
    schema = _polars_schema(GENERATION_COLUMNS)
    return pl.DataFrame(columns, schema={k: schema[k] for k in columns})
