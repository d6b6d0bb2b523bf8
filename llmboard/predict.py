"""One inference job: a model at a precision on one shard of a task -> predictions.

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
from pathlib import Path

from .atomic import atomic_path, write_json
from .manifest import load_manifest
from .provenance import code_provenance, now_utc
from .tasks import Task, build_requests, dataset_fingerprint, load_docs, shard_range

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ["doc_id", "choice", "n_choices", "gold", "choice_chars", "ctx_tokens",
                      "cont_tokens", "loglikelihood", "is_greedy", "context", "continuation"]


def peak_memory() -> dict:
    import torch

    out = {"host_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            out[f"cuda:{i}_peak_mb"] = round(torch.cuda.max_memory_allocated(i) / 2**20, 1)
    return out


def run_shard(model_dir, precision: str, task: Task, shard: int, n_shards: int,
              out_parquet, out_json, *, token_budget: int = 2048, seed: int = 1234,
              device_map=None, max_memory=None, offload_folder=None,
              trust_remote_code: bool = False, model=None) -> dict:
    import polars as pl
    import torch

    from .engine import Request, TransformersLM, split_pair
    from .loading import load_model

    torch.manual_seed(seed)
    t0 = time.monotonic()
    started = time.time()
    manifest = load_manifest(model_dir)
    docs = load_docs(task)
    ids = list(shard_range(len(docs), shard, n_shards))
    rows = build_requests(task, [docs[i] for i in ids], ids)
    log.info("task %s (%s) shard %d/%d: %d docs, %d requests", task.name, task.hash, shard,
             n_shards, len(ids), len(rows))
    if model is None:
        model, tok, placement = load_model(model_dir, precision, device_map=device_map,
                                           max_memory=max_memory, offload_folder=offload_folder,
                                           trust_remote_code=trust_remote_code)
    else:  # an already-loaded (model, tokenizer, placement), reused across shards
        model, tok, placement = model
    t_load = time.monotonic() - t0
    lm = TransformersLM(model, tok, token_budget=token_budget)
    pairs = [split_pair(tok, r["context"], r["continuation"], lm.prefix_token_id) for r in rows]
    t1 = time.monotonic()
    results = lm.loglikelihood_tokens(pairs)
    t_infer = time.monotonic() - t1
    table = pl.DataFrame({
        "doc_id": [r["doc_id"] for r in rows],
        "choice": [r["choice"] for r in rows],
        "n_choices": [r["n_choices"] for r in rows],
        "gold": [r["gold"] for r in rows],
        "choice_chars": [r["choice_chars"] for r in rows],
        "ctx_tokens": [len(c) for c, _ in pairs],
        "cont_tokens": [len(k) for _, k in pairs],
        "loglikelihood": [ll for ll, _ in results],
        "is_greedy": [g for _, g in results],
        "context": [r["context"] for r in rows],
        "continuation": [r["continuation"] for r in rows],
    }, schema={"doc_id": pl.Int64, "choice": pl.Int32, "n_choices": pl.Int32, "gold": pl.Int32,
               "choice_chars": pl.Int32, "ctx_tokens": pl.Int32, "cont_tokens": pl.Int32,
               "loglikelihood": pl.Float64, "is_greedy": pl.Boolean, "context": pl.String,
               "continuation": pl.String})
    with atomic_path(out_parquet) as tmp:
        table.write_parquet(tmp)
    info = {
        "model_dir": str(model_dir),
        "checkpoint_sha256": manifest["checkpoint_sha256"],
        "precision": precision,
        "task": task.name,
        "task_hash": task.hash,
        "task_definition": task.spec,
        "n_docs_total": len(docs),
        "dataset_fingerprint": dataset_fingerprint(docs),
        "shard": shard, "n_shards": n_shards, "doc_ids": [ids[0], ids[-1] + 1] if ids else [0, 0],
        "n_requests": len(rows),
        "token_budget": token_budget, "final_token_budget": lm.token_budget,
        "seed": seed,
        "device_map": placement,
        "peak_memory": peak_memory(),
        "engine_stats": lm.stats,
        "seconds": {"load": round(t_load, 3), "inference": round(t_infer, 3)},
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "interval": [started, time.time()],
        "finished": now_utc(),
        **code_provenance(),
    }
    write_json(out_json, info)
    log.info("wrote %s (%d rows) in %.1f s inference", out_parquet, len(rows), t_infer)
    return info
