"""Precision agreement: how far each precision moves a model's answers.

For every model and task, each precision is compared with the highest one
evaluated (fp32, else bf16, ...), document by document on the same requests:
share of documents whose chosen answer flips, mean and max |delta loglikelihood|,
and delta accuracy with its paired standard error (sd of per-document differences
/ sqrt(n)), which is much tighter than comparing two independent stderrs.
"""

from __future__ import annotations

import math

from ..atomic import atomic_path, write_text
from ..inference.precisions import REFERENCE_ORDER

KEYS = ["model", "task", "precision", "reference"]


def _load(paths: list[str]):
    import polars as pl

    return pl.concat([pl.read_parquet(p, columns=["doc_id", "choice", "gold", "choice_chars",
                                                  "loglikelihood"]) for p in paths])


def _chosen(df):
    import polars as pl

    # argmax per doc, first on ties (as scoring): sort by -ll then choice
    return (df.sort(["doc_id", "loglikelihood", "choice"], descending=[False, True, False])
            .group_by("doc_id", maintain_order=True)
            .agg(pl.col("choice").first().alias("pred"), pl.col("gold").first()))


def compare(predictions: dict[tuple[str, str, str], list[str]]):
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
        ref = _load(precs[ref_name])
        ref_pred = _chosen(ref)
        for p in ranked[1:]:
            other = _load(precs[p])
            j = ref.join(other.select("doc_id", "choice", pl.col("loglikelihood").alias("ll_p")),
                         on=["doc_id", "choice"], how="inner")
            if j.height != ref.height or j.height != other.height:
                raise ValueError(f"{model}/{task}: {p} and {ref_name} predictions cover different requests")
            dll = (j["ll_p"] - j["loglikelihood"]).abs()
            pp = _chosen(other)
            d = ref_pred.join(pp.select("doc_id", pl.col("pred").alias("pred_p")), on="doc_id")
            diffs = ((d["pred_p"] == d["gold"]).cast(pl.Float64)
                     - (d["pred"] == d["gold"]).cast(pl.Float64)).to_list()
            n = len(diffs)
            mean = sum(diffs) / n
            sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / (n - 1)) if n > 1 else float("nan")
            rows.append({"model": model, "task": task, "precision": p, "reference": ref_name,
                         "n_docs": n, "flip_rate": float((d["pred"] != d["pred_p"]).mean()),
                         "mean_abs_dll": float(dll.mean()), "max_abs_dll": float(dll.max()),
                         "delta_acc": mean, "delta_acc_stderr": sd / math.sqrt(n)})
    schema = {"model": pl.String, "task": pl.String, "precision": pl.String, "reference": pl.String,
              "n_docs": pl.Int64, "flip_rate": pl.Float64, "mean_abs_dll": pl.Float64,
              "max_abs_dll": pl.Float64, "delta_acc": pl.Float64, "delta_acc_stderr": pl.Float64}
    return pl.DataFrame(rows, schema=schema).sort(KEYS)


def to_markdown(df) -> str:
    head = ["model", "task", "precision", "vs", "docs", "flipped", "mean abs dLL", "max abs dLL",
            "d acc (paired se)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in df.iter_rows(named=True):
        lines.append(f"| {r['model']} | {r['task']} | {r['precision']} | {r['reference']} | "
                     f"{r['n_docs']} | {r['flip_rate']:.2%} | {r['mean_abs_dll']:.4f} | "
                     f"{r['max_abs_dll']:.4f} | {r['delta_acc']:+.4f} ({r['delta_acc_stderr']:.4f}) |")
    return "\n".join(lines) + "\n"


def write_agreement(predictions: dict, out_prefix: str) -> None:
    df = compare(predictions)
    with atomic_path(f"{out_prefix}.parquet") as tmp:
        df.write_parquet(tmp, statistics=False)
    write_text(f"{out_prefix}.md", to_markdown(df))
