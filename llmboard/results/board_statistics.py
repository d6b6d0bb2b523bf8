"""Which differences on a board are real: the board's per-document outcomes through
``statistics`` (paired comparisons, rank intervals, tie groups, minimum detectable
effects).

Every score file keeps each document's value of each metric (``per_document``), so the
board's statistics need no prediction file. The rows are the board's complete rows
(model x precision with every displayed task); each displayed task contributes its
primary metric's per-document values: a 0/1 (accuracy, exact match, pass@1: exact
McNemar between two rows), a continuous value (a perplexity task: each document's
log-likelihood per word or byte, higher is better; the paired t-test), or for a group
(MMLU) its subtasks' documents, one cluster per subtask (cluster-robust standard errors,
as in Miller 2024). The average's difference between two rows takes every averaged task
into account (Var = sum of the tasks' paired variances / T^2).

Every p-value of the board (each task, group and the average, for every pair of rows) is
adjusted together, Holm by default (``statistics.adjust: bh`` for Benjamini-Hochberg).
Rank intervals come from a document-level bootstrap stratified by task (seeded: a
rebuild is byte-identical), on the averaged tasks; rows are tied when each one's rank
lies inside the other's interval (``statistics.tie_groups``). The bootstrap answers the
question a rank asks (where could this row place?) directly, and with many rows it stays
informative where pairwise tests after a multiplicity correction lose power.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

AVERAGE = "average"  # the comparisons' name for the board's average


class StatisticsError(ValueError):
    """Rows or settings the statistics cannot use; the message names them."""


@dataclass
class TaskOutcomes:
    """One displayed task's per-document primary values of every row: one array
    ``[rows, docs]`` per cluster (a plain task has one cluster, a group one per
    subtask)."""

    name: str
    clusters: list  # of numpy arrays [rows, docs]
    binary: bool

    @property
    def is_group(self) -> bool:
        return len(self.clusters) > 1

    @property
    def pooled(self):
        import numpy as np

        return np.concatenate(self.clusters, axis=1)


def _defaults() -> dict:
    """The config's ``statistics`` defaults (schemas/config.schema.yaml) and its seed."""
    from ..settings import schema, schema_default

    fields = schema()["properties"]["statistics"]["properties"]
    return {**{k: f["default"] for k, f in fields.items()}, "seed": schema_default("seed")}


def _per_document(score_file: str, metric: str) -> tuple[list[int], list[float]]:
    s = json.loads(Path(score_file).read_text())
    pd = s.get("per_document")
    if not pd or metric not in pd:
        raise StatisticsError(
            f"{score_file}: no per-document {metric} (scored before scores kept them); "
            "delete it and rerun to score it again"
        )
    values = [v[0] / v[1] if isinstance(v, list) else v for v in pd[metric]]
    return pd["doc_id"], values


def _aligned(name: str, rows: list[tuple], files: list[str], metric: str):
    """[rows, docs] on the documents every row scored, in doc_id order."""
    import numpy as np

    per_row = [dict(zip(*_per_document(f, metric))) for f in files]
    shared = sorted(set.intersection(*(set(d) for d in per_row)))
    if not shared:
        a, b = rows[0], rows[1] if len(rows) > 1 else rows[0]
        raise StatisticsError(f"{name}: rows {a} and {b} share no scored document")
    return np.array([[d[i] for i in shared] for d in per_row], dtype=np.float64)


def task_outcomes(long, rows: list[tuple], display: list[str], groups: dict) -> list:
    """The displayed tasks' outcomes of ``rows`` ((model, precision) pairs) from the
    score files the long board names."""
    import numpy as np
    import polars as pl

    out = []
    for t in display:
        members = [m for ms in groups[t]["subgroups"].values() for m in ms] if t in groups else [t]
        clusters = []
        for m in members:
            sub = long.filter(
                (pl.col("task") == m) & pl.col("primary") & ~pl.col("is_group")
            ).select("model", "precision", "metric", "score_file")
            by_row = {(r["model"], r["precision"]): r for r in sub.iter_rows(named=True)}
            metric = groups[t]["metric"] if t in groups else sub["metric"][0]
            files = [by_row[r]["score_file"] for r in rows]
            clusters.append(_aligned(m, rows, files, metric))
        binary = all(np.isin(c, (0.0, 1.0)).all() for c in clusters)
        out.append(TaskOutcomes(t, clusters, bool(binary)))
    return out


def _pairs_frame(rows: list[tuple], task: str, st: dict, test: str):
    """One row per unordered pair (i < j) of board rows: b's value minus a's (columns
    from numpy and gathered names: no Python object per pair, 2.7 million on a 300-row
    board)."""
    import numpy as np
    import polars as pl

    i, j = np.triu_indices(len(rows), k=1)
    models = pl.Series([r[0] for r in rows], dtype=pl.String)
    precisions = pl.Series([r[1] for r in rows], dtype=pl.String)
    return pl.DataFrame(
        {
            "model_a": models.gather(i),
            "precision_a": precisions.gather(i),
            "model_b": models.gather(j),
            "precision_b": precisions.gather(j),
            "task": pl.repeat(task, len(i), dtype=pl.String, eager=True),
            "test": pl.repeat(test, len(i), dtype=pl.String, eager=True),
            **{
                k: np.asarray(st[k], dtype=np.float64)[i, j]
                for k in ("diff", "se", "ci_low", "ci_high", "p")
            },
            "n": np.asarray(st["n"])[i, j].astype(np.int64),
        }
    )


def board_statistics(long, display: list[str], averaged: list[str], groups: dict, rows, cfg):
    """(rank table, comparisons, task table) for the complete ``rows`` of a board:

    - rank table: model, precision, rank_low, rank_high, tie_group (1 = the best group);
    - comparisons: every pair of rows on each displayed task and the average: diff
      (b - a), se, 95 % interval, p, p_adjusted, n, the test, significant;
    - task table: each displayed task's documents and minimum detectable effect.
    """
    import numpy as np
    import polars as pl

    from . import statistics as st

    cfg = {**_defaults(), **(cfg or {})}
    level = float(cfg["level"])
    if len(rows) < 2:
        return None
    tasks = task_outcomes(long, rows, display, groups)
    frames, per_task = [], {}
    for t in tasks:
        if t.is_group:
            s = st.clustered_paired(t.clusters, level=level)
            test = "clustered z"
        else:
            s = st.paired_differences(t.clusters[0], t.binary, level)
            test = "exact McNemar" if t.binary else "paired t"
        per_task[t.name] = s
        frames.append(_pairs_frame(rows, t.name, s, test))
    avg_tasks = [t for t in tasks if t.name in averaged]
    if avg_tasks:
        s = st.average_difference([per_task[t.name] for t in avg_tasks], level)
        frames.append(_pairs_frame(rows, AVERAGE, s, "normal (sum of task variances)"))
    comp = pl.concat(frames)
    comp = comp.with_columns(
        p_adjusted=pl.Series(st.adjust_pvalues(comp["p"].to_numpy(), cfg["adjust"]))
    ).with_columns(significant=pl.col("p_adjusted") < 1 - level)
    if avg_tasks:
        rank, low, high = st.rank_intervals(
            [t.pooled for t in avg_tasks], int(cfg["bootstrap"]), int(cfg["seed"]), level
        )
        group = st.tie_groups(rank, low, high)
    else:
        rank = low = high = group = np.full(len(rows), None)
    ranks = pl.DataFrame(
        {
            "model": [r[0] for r in rows],
            "precision": [r[1] for r in rows],
            "rank_low": [None if x is None else int(x) for x in low],
            "rank_high": [None if x is None else int(x) for x in high],
            "tie_group": [None if x is None else int(x) + 1 for x in group],
        },
        schema={
            "model": pl.String,
            "precision": pl.String,
            "rank_low": pl.Int64,
            "rank_high": pl.Int64,
            "tie_group": pl.Int64,
        },
    )
    task_rows = []
    for t in tasks:
        x = t.pooled
        n = x.shape[1]
        if t.binary:
            # every row right (or wrong) on every document: no spread to size an effect by
            p0 = float(x.mean())
            ok = 0 < p0 < 1
            mde = float(st.minimum_detectable_effect(n, p0=p0, alpha=1 - level)) if ok else None
        else:
            sd = float(np.std(x, ddof=1)) if n > 1 else float("nan")
            mde = float(st.minimum_detectable_effect(n, sd=sd, alpha=1 - level)) if sd > 0 else None
        task_rows.append({"task": t.name, "documents": n, "binary": t.binary, "mde": mde})
    settings = {k: cfg[k] for k in ("level", "adjust", "bootstrap", "seed")}
    comp = comp.with_columns(**{k: pl.lit(v) for k, v in settings.items()})
    return ranks, comp, pl.DataFrame(task_rows)
