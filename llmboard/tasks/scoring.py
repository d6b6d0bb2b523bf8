"""Score stored predictions (cheap; no model involved).

The scorer version hashes every module that decides a score (``SCORING_MODULES``):
editing how a metric or an answer filter is computed re-scores everything, with no
inference.

Two kinds of prediction files, told apart by their columns:

- multiple choice: one row per (document, choice), ``loglikelihood`` among the columns;
  scored by ``metrics.per_doc_metrics`` (acc, acc_norm).
- generate_until: one row per document, ``doc_id, context, generation, gen_tokens,
  stop_reason, ctx_tokens, targets, from_store``; scored by
  ``metrics.per_doc_generation_metrics`` with the task's ``filter_list`` and
  ``metric_list`` read from the sidecar's ``task_definition`` (the resolved task, part
  of the task hash), one metric per filter x metric (``exact_match,strict-match``).
- loglikelihood (lambada_openai): the multiple-choice columns, one row per document (the
  target as its one choice); scored by ``metrics.per_doc_loglikelihood_metrics``
  (perplexity, acc), told apart by the sidecar's ``task_definition.output_type``.
- loglikelihood_rolling: one row per document, ``doc_id, text, tokens, windows,
  max_length, loglikelihood, from_store``; scored by ``metrics.per_doc_rolling_metrics``.

A metric's value and stderr: ``metrics.aggregate`` (a mean, or lm-eval's perplexity
aggregations).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from ..atomic import write_json
from ..hashing import seal, sha256_file, sha256_json, short
from .errors import ScoreError
from .metrics import (
    aggregate,
    per_doc_generation_metrics,
    per_doc_loglikelihood_metrics,
    per_doc_metrics,
    per_doc_rolling_metrics,
)

SCORING_MODULES = (
    "metrics.py",
    "scoring.py",
    "filters.py",
    "task_functions.py",
    "math_answers.py",
    "code_execution.py",
    "sandbox.py",
)
# the columns a generate_until prediction file must have (one row per document)
GENERATION_COLUMNS = ("doc_id", "generation", "targets")
ROLLING_COLUMNS = ("doc_id", "text", "loglikelihood")


def scorer_version_of(folder: Path) -> str:
    """The scorer version of the scoring modules in ``folder`` (a copy of this package's
    ``tasks/``)."""
    return short(sha256_json({m: sha256_file(folder / m) for m in SCORING_MODULES}), 8)


@lru_cache(maxsize=1)
def scorer_version() -> str:
    return scorer_version_of(Path(__file__).resolve().parent)


def _read_sidecar(info: str) -> dict:
    try:
        return json.loads(Path(info).read_text())
    except (OSError, ValueError) as e:
        raise ScoreError(f"{info}: prediction sidecar not readable: {e}") from None


def check_prediction_file(parquet: str, meta: dict, info: str) -> None:
    """The parquet is the one its sidecar recorded when it was written (size, sha256)."""
    p = Path(parquet)
    if not p.exists():
        raise ScoreError(f"{parquet}: prediction file missing (its sidecar {info} exists)")
    want = meta.get("parquet_sha256")
    if want is None:  # written before sidecars recorded it
        return
    size = p.stat().st_size
    if size != meta["parquet_bytes"]:
        why = f"{size} bytes, {info} recorded {meta['parquet_bytes']}: truncated or rewritten"
    elif sha256_file(p) != want:
        why = f"sha256 differs from the one {info} recorded"
    else:
        return
    raise ScoreError(
        f"{parquet}: differs from what was written ({why}); delete it and its .json, and "
        "rerun to recompute"
    )


def load_predictions(parquets: list[str], infos: list[str]):
    """Read and check the shards of one model x precision x task."""
    import polars as pl

    metas = [_read_sidecar(p) for p in infos]
    if not metas:
        raise ScoreError("no prediction shards given")
    first = metas[0]
    for m, p in zip(metas, infos):
        for key in (
            "task_hash",
            "dataset_fingerprint",
            "checkpoint_sha256",
            "precision",
            "n_docs_total",
            "n_shards",
        ):
            if m[key] != first[key]:
                raise ScoreError(
                    f"{p}: {key} {m[key]!r} differs from {infos[0]}: {first[key]!r}; "
                    "stale shard, rerun it"
                )
    frames = []
    for parquet, m, info in zip(parquets, metas, infos):
        check_prediction_file(parquet, m, info)
        try:
            frames.append(pl.read_parquet(parquet))
        except Exception as e:  # noqa: BLE001 - polars' errors do not name the file
            raise ScoreError(f"{parquet}: not a readable prediction file: {e}") from None
    # shards written by different llmboard versions may differ in optional columns
    df = pl.concat(frames, how="diagonal_relaxed")
    got = set(df["doc_id"].unique().to_list())
    want = set(range(first["n_docs_total"]))
    if got != want:
        missing = sorted(want - got)[:5]
        raise ScoreError(
            f"predictions cover {len(got)} of {len(want)} docs; missing e.g. {missing}"
        )
    return df, metas


def is_generation(df, meta: dict) -> bool:
    """A generate_until prediction frame (by its columns, else its task's output_type)."""
    if "generation" in df.columns:
        return True
    if "loglikelihood" in df.columns:
        return False
    return (meta.get("task_definition") or {}).get("output_type") == "generate_until"


def score_rows(
    df, meta: dict, info: str = "", *, code: dict | None = None, recorded: dict | None = None
) -> dict[str, list]:
    """Per document items, ``{"doc_id": [...], metric: [...]}``, of a prediction frame of
    any kind (``meta``: a shard's sidecar): 0/1 for acc, acc_norm and exact_match, the
    log-likelihood for perplexity, (log-likelihood, words or bytes) for the rolling ones.
    A generation task whose scoring checks answers (math) or runs programs (code) adds
    ``"details"`` (filter -> per document, what decided); ``code`` and ``recorded`` as
    ``metrics.per_doc_generation_metrics`` takes them."""
    kind = (meta.get("task_definition") or {}).get("output_type")
    if kind == "loglikelihood_rolling" or "text" in df.columns and "tokens" in df.columns:
        missing = [c for c in ROLLING_COLUMNS if c not in df.columns]
        if missing:
            raise ScoreError(f"{info}: rolling predictions lack column(s) {missing}")
        try:
            return per_doc_rolling_metrics(df)
        except ScoreError as e:
            raise ScoreError(f"{info}: {e}") from None
    if kind == "loglikelihood":
        try:
            return per_doc_loglikelihood_metrics(df)
        except ScoreError as e:
            raise ScoreError(f"{info}: {e}") from None
    if not is_generation(df, meta):
        return per_doc_metrics(df)
    missing = [c for c in GENERATION_COLUMNS if c not in df.columns]
    if missing:
        raise ScoreError(f"{info}: generation predictions lack column(s) {missing}")
    spec = meta.get("task_definition")
    if not isinstance(spec, dict):
        raise ScoreError(f"{info}: no task_definition: the filters and metrics are not known")
    try:
        per_doc = per_doc_generation_metrics(df, spec, code=code, recorded=recorded)
    except ScoreError as e:
        raise ScoreError(f"{info}: {e}") from None
    out = {"doc_id": per_doc["doc_id"], **per_doc["metrics"]}
    if per_doc["details"]:
        out["details"] = per_doc["details"]
    return out


def recorded_details(score: dict, *, code_only: bool = False) -> dict | None:
    """A score's record of what decided each document (``compute_score``'s ``details``:
    math checks, program outcomes) as ``recorded`` takes it, filter -> per document;
    None when it has none (or, with ``code_only``, when its task runs no code)."""
    details = score.get("details")
    if not details or (code_only and "code_execution" not in score):
        return None
    return {k: v for k, v in details.items() if k != "doc_id"}


def check_counts(details: dict) -> dict:
    """filter -> how many documents each check status or program outcome has, e.g.
    ``{"none": {"exact_match_check": {"equivalent": 3, "timeout": 1}, ...}}``: a timed-out
    check or a killed program shows in the score, not only as a 0."""
    out = {}
    for name, docs in details.items():
        counts: dict[str, dict[str, int]] = {}
        for d in docs:
            keys = [(k, v) for k, v in d.items() if k.endswith("_check")]
            keys += [("programs", o["status"]) for o in d.get("programs", [])]
            for k, v in keys:
                counts.setdefault(k, {})
                counts[k][v] = counts[k].get(v, 0) + 1
        out[name] = {k: dict(sorted(v.items())) for k, v in counts.items()}
    return out


def compute_score(
    parquets: list[str],
    infos: list[str],
    *,
    model: str,
    metrics: list[str],
    primary_metric: str,
    code: dict | None = None,
    recorded: dict | None = None,
) -> dict:
    """The score of one model x precision x task from its prediction shards, sealed
    (``hashing.seal``) so that an edited number is refused downstream. A task whose
    scoring checks answers or runs programs keeps, per document, what decided
    (``details``) and how many of each outcome (``checks``)."""
    df, metas = load_predictions(parquets, infos)
    per_doc = score_rows(df, metas[0], infos[0], code=code, recorded=recorded)
    details = per_doc.pop("details", None)
    missing = [k for k in metrics if k not in per_doc]
    if missing:
        raise ScoreError(
            f"{infos[0]}: metric(s) {missing} not computed for this task; it has "
            f"{sorted(k for k in per_doc if k != 'doc_id')}"
        )
    m0 = metas[0]
    extra = {}
    if details:
        extra = {
            "checks": check_counts(details),
            "details": {"doc_id": per_doc["doc_id"], **details},
        }
    if code:
        extra["code_execution"] = code
    # each document's value of each metric (a 0/1, a log-likelihood, or a
    # [log-likelihood, words or bytes] pair): what the board's paired comparisons and
    # rank intervals are computed from, without reading the predictions again
    extra["per_document"] = {
        "doc_id": per_doc["doc_id"],
        **{k: [list(x) if isinstance(x, tuple) else x for x in per_doc[k]] for k in metrics},
    }
    return seal(
        {
            "model": model,
            "precision": m0["precision"],
            "task": m0["task"],
            "n": len(per_doc["doc_id"]),
            "primary_metric": primary_metric,
            "metrics": {
                k: dict(zip(("value", "stderr"), aggregate(k, per_doc[k]))) for k in metrics
            },
            "provenance": {
                "checkpoint_sha256": m0["checkpoint_sha256"],
                "dataset_fingerprint": m0["dataset_fingerprint"],
                "task_hash": m0["task_hash"],
                "precision": m0["precision"],
                "token_budget": sorted({m["token_budget"] for m in metas}),
                "final_token_budget": min(m["final_token_budget"] for m in metas),
                # the engine's numeric form per shard ("-bi": batch-invariant); older
                # prediction files do not say
                "numerics": sorted({m["numerics"] for m in metas if m.get("numerics")}),
                "seed": m0["seed"],
                "device_map": m0["device_map"],
                "llmboard_version": m0["llmboard_version"],
                "git_commit": m0["git_commit"],
                "libraries": m0["libraries"],
                "run_finished": max(m["finished"] for m in metas),
                "shards": len(metas),
                "scorer_version": scorer_version(),
            },
            # the files this score was computed from: `llmboard verify` reads these
            "predictions": {"parquets": list(map(str, parquets)), "infos": list(map(str, infos))},
            **extra,
        }
    )


def score(
    parquets: list[str],
    infos: list[str],
    out_json,
    *,
    model: str,
    metrics: list[str],
    primary_metric: str,
    code: dict | None = None,
) -> dict:
    result = compute_score(
        parquets, infos, model=model, metrics=metrics, primary_metric=primary_metric, code=code
    )
    write_json(out_json, result)
    return result
