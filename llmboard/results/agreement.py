"""Precision agreement: how far each precision moves a model's answers.

For every model and task, each precision is compared with the highest one
evaluated (fp32, else bf16, ...), document by document on the same requests:
share of documents whose chosen answer flips, mean and max |delta loglikelihood|,
and delta accuracy with its paired standard error (sd of per-document differences
/ sqrt(n)), which is much tighter than comparing two independent stderrs.
Generation tasks: a flip is a document whose generated text differs, the accuracy is
the task's primary metric per document, and there is no log-likelihood to compare.
loglikelihood tasks (one target per document, lambada_openai): the answer is is_greedy
(every target token the arg-max), a flip a document whose is_greedy changes.
loglikelihood_rolling tasks: the per-document log-likelihoods are compared; there is
no answer to flip and no accuracy.
"""

from __future__ import annotations

import math

from ..atomic import atomic_path, write_text
from ..inference.precisions import REFERENCE_ORDER

KEYS = ["model", "task", "precision", "reference"]


# what a comparison reads of a choice prediction file; n_choices and is_greedy only
# matter for loglikelihood tasks (one target per document), so a file without them
# is compared as multiple choice
CHOICE_COLUMNS = ["doc_id", "choice", "gold", "choice_chars", "loglikelihood"]
SINGLE_TARGET_COLUMNS = ["n_choices", "is_greedy"]


def _load(paths: list[str]):
    import polars as pl

    frames = []
    for p in paths:
        scan = pl.scan_parquet(p)
        names = scan.collect_schema().names()
        wanted = CHOICE_COLUMNS + [c for c in SINGLE_TARGET_COLUMNS if c in names]
        frames.append(scan.select(wanted).collect())
    return pl.concat(frames, how="diagonal_relaxed")


def _chosen(df):
    """doc_id, the answer and whether it is right: the arg-max choice, first on ties
    (as scoring), against gold; with one target per document (loglikelihood tasks),
    is_greedy (lm-eval's acc there)."""
    import polars as pl

    if "n_choices" in df.columns and df["n_choices"].max() == 1:
        return df.sort("doc_id").select(
            "doc_id", pl.col("is_greedy").alias("pred"), pl.col("is_greedy").alias("right")
        )
    return (
        df.sort(["doc_id", "loglikelihood", "choice"], descending=[False, True, False])
        .group_by("doc_id", maintain_order=True)
        .agg(pl.col("choice").first().alias("pred"), pl.col("gold").first())
        .with_columns(right=pl.col("pred") == pl.col("gold"))
        .drop("gold")
    )


def _compare_rolling(ref_paths: list[str], paths: list[str]) -> dict:
    """Per-document log-likelihoods of a rolling task: no answer, no accuracy."""
    import polars as pl

    def load(ps):
        return pl.concat([pl.read_parquet(p, columns=["doc_id", "loglikelihood"]) for p in ps])

    ref, other = load(ref_paths), load(paths)
    j = ref.join(other.rename({"loglikelihood": "ll_p"}), on="doc_id")
    if j.height != ref.height or j.height != other.height:
        raise ValueError("predictions cover different documents")
    dll = (j["ll_p"] - j["loglikelihood"]).abs()
    return {
        "n_docs": j.height,
        "flip_rate": None,
        "mean_abs_dll": float(dll.mean()),
        "max_abs_dll": float(dll.max()),
        "delta_acc": None,
        "delta_acc_stderr": None,
    }


def _kind(paths: list[str]) -> str:
    """Which predictions these are, from the first file's columns (one schema read):
    ``rolling``, ``generation`` or ``choices`` (multiple choice and loglikelihood)."""
    import pyarrow.parquet as pq

    names = pq.read_schema(paths[0]).names
    if "tokens" in names and "windows" in names:
        return "rolling"
    return "generation" if "generation" in names else "choices"


def _recorded(score_file: str | None) -> dict | None:
    """A score's record of what decided each document (math checks, program outcomes):
    agreement reuses it rather than checking answers or running programs again."""
    import json
    from pathlib import Path

    from ..tasks.scoring import recorded_details

    if score_file is None or not Path(score_file).exists():
        return None
    return recorded_details(json.loads(Path(score_file).read_text()))


def _generation_correct(paths: list[str], score_file: str | None = None):
    """doc_id, the generated text and the primary metric's 0/1 per document."""
    import json
    from pathlib import Path

    import polars as pl

    from ..tasks.definitions import Task
    from ..tasks.scoring import score_rows

    df = pl.concat([pl.read_parquet(p) for p in paths], how="diagonal_relaxed")
    meta = json.loads(Path(paths[0]).with_suffix(".json").read_text())
    spec = meta["task_definition"]
    primary = Task(spec["task"], spec, Path(meta.get("task_path", "."))).primary_metric
    scored = score_rows(df, meta, paths[0], recorded=_recorded(score_file))
    right = pl.DataFrame({"doc_id": scored["doc_id"], "correct": scored[primary]})
    if "repeat" in df.columns:  # a sampling task: its first sample's text is compared
        df = df.filter(pl.col("repeat") == 0)
    return df.select("doc_id", "generation").join(right, on="doc_id").sort("doc_id")


def _compare_generations(
    ref_paths: list[str], paths: list[str], ref_score: str | None, score: str | None
) -> dict:
    import polars as pl

    ref, other = _generation_correct(ref_paths, ref_score), _generation_correct(paths, score)
    d = ref.join(
        other.select(
            "doc_id", pl.col("generation").alias("gen_p"), pl.col("correct").alias("correct_p")
        ),
        on="doc_id",
    )
    if d.height != ref.height or d.height != other.height:
        raise ValueError("predictions cover different documents")
    diffs = (d["correct_p"] - d["correct"]).to_list()
    return {
        "n_docs": d.height,
        "flip_rate": float((d["generation"] != d["gen_p"]).mean()),
        "mean_abs_dll": None,
        "max_abs_dll": None,
        "diffs": diffs,
    }


def _equivalence(diffs: list[float], margin: float, alpha: float) -> dict:
    """Is the precision within +-``margin`` of the reference on this task? Two one-sided
    tests on the per-document differences of the primary metric (``statistics.tost``):
    ``equivalent``, ``different`` (the difference is significant and not within the
    margin) or ``not shown equivalent``."""
    import numpy as np

    from .statistics import tost

    if len(diffs) < 2:
        return {"tost_p": None, "equivalence": None}
    d = np.asarray(diffs, dtype=np.float64)
    if not d.any():
        # no document changed: the t statistic is infinite at any n, which would call 4
        # documents "equivalent". The exact test instead: if the share of documents
        # whose outcome changes (which bounds |difference|) were the margin, none of n
        # would change with probability (1 - margin)^n: that is the p-value (at alpha
        # 0.05 and a 1-point margin, equivalence needs n >= 299 documents)
        p = float((1.0 - margin) ** len(d))
        return {"tost_p": p, "equivalence": "equivalent" if p < alpha else "not shown equivalent"}
    # the paired t version (statsmodels' ttost_paired) on the differences themselves
    r = tost(np.zeros_like(d), d, margin, alpha, binary=False)
    return {"tost_p": float(r["p"]), "equivalence": str(r["verdict"])}


def compare(
    predictions: dict[tuple[str, str, str], list[str]],
    scores: dict[tuple[str, str, str], str] | None = None,
    margin: float = 0.01,
    alpha: float = 0.05,
):
    """``predictions``: (model, precision, task) -> prediction parquet paths."""
    import polars as pl

    rows = []
    by_mt: dict[tuple[str, str], dict[str, list[str]]] = {}
    for (model, precision, task), paths in predictions.items():
        by_mt.setdefault((model, task), {})[precision] = paths
    for (model, task), precs in sorted(by_mt.items()):
        ranked = [p for p in REFERENCE_ORDER if p in precs]
        if len(ranked) < 2:
            continue
        ref_name = ranked[0]
        kind = _kind(precs[ref_name])
        if kind == "rolling":
            for p in ranked[1:]:
                rows.append(
                    {
                        "model": model,
                        "task": task,
                        "precision": p,
                        "reference": ref_name,
                        **_compare_rolling(precs[ref_name], precs[p]),
                    }
                )
            continue
        if kind == "generation":
            for p in ranked[1:]:
                g = _compare_generations(
                    precs[ref_name],
                    precs[p],
                    (scores or {}).get((model, ref_name, task)),
                    (scores or {}).get((model, p, task)),
                )
                diffs = g.pop("diffs")
                n = len(diffs)
                mean = sum(diffs) / n
                sd = (
                    math.sqrt(sum((x - mean) ** 2 for x in diffs) / (n - 1))
                    if n > 1
                    else float("nan")
                )
                rows.append(
                    {
                        "model": model,
                        "task": task,
                        "precision": p,
                        "reference": ref_name,
                        **g,
                        "delta_acc": mean,
                        "delta_acc_stderr": sd / math.sqrt(n),
                        **_equivalence(diffs, margin, alpha),
                    }
                )
            continue
        ref = _load(precs[ref_name])
        ref_pred = _chosen(ref)
        for p in ranked[1:]:
            other = _load(precs[p])
            j = ref.join(
                other.select("doc_id", "choice", pl.col("loglikelihood").alias("ll_p")),
                on=["doc_id", "choice"],
                how="inner",
            )
            if j.height != ref.height or j.height != other.height:
                raise ValueError(
                    f"{model}/{task}: {p} and {ref_name} predictions cover different requests"
                )
            dll = (j["ll_p"] - j["loglikelihood"]).abs()
            pp = _chosen(other)
            d = ref_pred.join(
                pp.select(
                    "doc_id", pl.col("pred").alias("pred_p"), pl.col("right").alias("right_p")
                ),
                on="doc_id",
            )
            diffs = (d["right_p"].cast(pl.Float64) - d["right"].cast(pl.Float64)).to_list()
            n = len(diffs)
            mean = sum(diffs) / n
            sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / (n - 1)) if n > 1 else float("nan")
            rows.append(
                {
                    "model": model,
                    "task": task,
                    "precision": p,
                    "reference": ref_name,
                    "n_docs": n,
                    "flip_rate": float((d["pred"] != d["pred_p"]).mean()),
                    "mean_abs_dll": float(dll.mean()),
                    "max_abs_dll": float(dll.max()),
                    "delta_acc": mean,
                    "delta_acc_stderr": sd / math.sqrt(n),
                    **_equivalence(diffs, margin, alpha),
                }
            )
    schema = {
        "model": pl.String,
        "task": pl.String,
        "precision": pl.String,
        "reference": pl.String,
        "n_docs": pl.Int64,
        "flip_rate": pl.Float64,
        "mean_abs_dll": pl.Float64,
        "max_abs_dll": pl.Float64,
        "delta_acc": pl.Float64,
        "delta_acc_stderr": pl.Float64,
        "tost_p": pl.Float64,
        "equivalence": pl.String,
        "margin": pl.Float64,
    }
    rows = [{"tost_p": None, "equivalence": None, **r, "margin": margin} for r in rows]
    return pl.DataFrame(rows, schema=schema).sort(KEYS)


def to_markdown(df) -> str:
    head = [
        "model",
        "task",
        "precision",
        "vs",
        "docs",
        "flipped",
        "mean abs dLL",
        "max abs dLL",
        "d acc (paired se)",
        "equivalence (TOST p)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in df.iter_rows(named=True):
        verdict = "-" if r.get("equivalence") is None else f"{r['equivalence']} ({r['tost_p']:.3g})"
        lines.append(
            f"| {r['model']} | {r['task']} | {r['precision']} | {r['reference']} | "
            f"{r['n_docs']} | {_share(r['flip_rate'])} | {_num(r['mean_abs_dll'])} | "
            f"{_num(r['max_abs_dll'])} | {_delta(r['delta_acc'], r['delta_acc_stderr'])} | "
            f"{verdict} |"
        )
    if df.height:
        lines += [
            "",
            f"equivalence: two one-sided tests of the primary metric's per-document "
            f"difference against +-{df['margin'][0]:g} (statistics.equivalence_margin): "
            "equivalent, different (significant and not within the margin), or not shown "
            "equivalent.",
        ]
    return "\n".join(lines) + "\n"


def _num(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def _share(x) -> str:
    return "-" if x is None else f"{x:.2%}"


def _delta(x, se) -> str:
    return "-" if x is None else f"{x:+.4f} ({se:.4f})"


def write_agreement(
    predictions: dict,
    out_prefix: str,
    scores: dict | None = None,
    margin: float = 0.01,
    alpha: float = 0.05,
) -> None:
    """``scores``: (model, precision, task) -> score file, whose record of math checks and
    program outcomes a generation task's comparison reuses (a code task needs it)."""
    df = compare(predictions, scores, margin, alpha)
    with atomic_path(f"{out_prefix}.parquet") as tmp:
        df.write_parquet(tmp, statistics=False)
    write_text(f"{out_prefix}.md", to_markdown(df))
