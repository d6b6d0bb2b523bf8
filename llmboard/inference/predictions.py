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
from ..results.provenance import code_provenance, now_utc
from ..tasks.definitions import Task
from ..tasks.documents import dataset_fingerprint, load_docs, shard_range
from ..tasks.prompts import build_requests
from .engine import LM, LoglikelihoodRequest
from .loading import ModelContext

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


def _polars_schema() -> dict:
    import polars as pl

    return {k: getattr(pl, v) for k, v in PREDICTION_COLUMNS.items()}


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
) -> dict:
    """Every request of one task shard through ``lm.loglikelihood``; write the two files."""
    import polars as pl
    import torch

    torch.manual_seed(seed)
    started = time.time()
    docs = load_docs(task)
    ids = list(shard_range(len(docs), shard, n_shards))
    rows = build_requests(task, [docs[i] for i in ids], ids)
    log.info(
        "task %s (%s) shard %d/%d: %d docs, %d requests",
        task.name,
        task.hash,
        shard,
        n_shards,
        len(ids),
        len(rows),
    )
    budget, stats_before = lm.token_budget, dict(lm.stats)
    t1 = time.monotonic()
    results = lm.loglikelihood(
        [LoglikelihoodRequest(r["context"], r["continuation"]) for r in rows]
    )
    t_infer = time.monotonic() - t1
    table = pl.DataFrame(
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
        schema=_polars_schema(),
    )
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
        "n_docs_total": len(docs),
        "dataset_fingerprint": dataset_fingerprint(docs),
        "shard": shard,
        "n_shards": n_shards,
        "doc_ids": [ids[0], ids[-1] + 1] if ids else [0, 0],
        "n_requests": len(rows),
        # the parquet as written: scoring and `llmboard verify` refuse a file that differs
        "parquet_sha256": parquet_sha256,
        "parquet_bytes": parquet_bytes,
        "token_budget": budget,
        "final_token_budget": lm.token_budget,
        "seed": seed,
        "device_map": model.placement,
        "peak_memory": peak_memory(),
        "engine_stats": {k: v - stats_before.get(k, 0) for k, v in lm.stats.items()},
        "seconds": {"load": round(model.load_seconds, 3), "inference": round(t_infer, 3)},
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "interval": [started, time.time()],
        "finished": now_utc(),
        **code_provenance(),
    }
    write_json(out_json, info)
    log.info("wrote %s (%d rows) in %.1f s inference", out_parquet, len(rows), t_infer)
    return info
