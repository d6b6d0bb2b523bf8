"""How long the board's statistics take, and how much memory, on a large board.

A synthetic board (no files): M models x P precisions rows (300 by default), T tasks
of 100-1,000 documents each, some of them groups of subtasks (clusters), a few with
continuous outcomes (log-likelihood-like); per-document 0/1 outcomes from an
item-response model (document difficulty, row skill), each lower precision being its
model's fp32 row with a share of its answers redrawn. Then everything a board shows:

- every pair of rows on every task (paired differences, exact McNemar / paired t,
  clustered for groups) and on the average (61 x 44,850 comparisons by default);
- Holm (and BH) over all of them;
- rank intervals with 1,000 bootstrap draws, and the tie groups;
- TOST of every model x task x lower precision against its fp32 row;
- the minimum detectable effect of every task.

Prints the time of each step, the total and the peak RSS; writes
bench/results/statistics_scale.json.

    .venv/bin/python -m bench.statistics_scale
    .venv/bin/python -m bench.statistics_scale --models 20 --boot 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

from llmboard.results import statistics as S

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "statistics_scale.json"
PRECISIONS = ["fp32", "bf16", "nf4"]
REDRAWN = {"fp32": 0.0, "bf16": 0.02, "nf4": 0.08}  # share of answers a precision redraws


def peak_rss_mib() -> float:
    """Peak resident memory of this process (ru_maxrss: KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_task(rng, skill, precisions, docs, kind):
    """One task's ``[rows, docs]`` float32 outcomes, rows model-major (m0 fp32, m0 bf16,
    ...). ``kind``: "binary" or "continuous"."""
    difficulty = rng.normal(0.0, 1.5, docs).astype(np.float32)
    base_logit = skill[:, None] - difficulty[None, :]
    if kind == "binary":
        base = rng.random(base_logit.shape, dtype=np.float32) < 1 / (1 + np.exp(-base_logit))
    else:
        base = -20.0 + base_logit + rng.normal(0, 0.5, base_logit.shape).astype(np.float32)
    rows = []
    for m in range(len(skill)):
        for p in precisions:
            x = base[m].astype(np.float32)
            share = REDRAWN[p]
            if share:
                if kind == "binary":
                    redo = rng.random(docs) < share
                    fresh = rng.random(docs) < 1 / (1 + np.exp(-base_logit[m]))
                    x = np.where(redo, fresh, x).astype(np.float32)
                else:
                    x = x + rng.normal(0, share, docs).astype(np.float32)
            rows.append(x)
    return np.stack(rows)


def make_board(n_models, n_tasks, n_groups, n_continuous, seed):
    """Tasks: a list of (name, kind, outcomes or list of subtask outcomes)."""
    rng = np.random.default_rng(seed)
    skill = rng.normal(0.0, 1.0, n_models).astype(np.float32)
    tasks = []
    for t in range(n_tasks):
        docs = int(rng.integers(100, 1001))
        kind = "continuous" if t >= n_tasks - n_continuous else "binary"
        if t < n_groups:  # a group: 5-57 subtasks of its documents
            n_sub = int(rng.integers(5, 58))
            docs = max(docs, 2 * n_sub)
            cuts = np.sort(rng.choice(np.arange(1, docs), n_sub - 1, replace=False))
            sizes = np.diff(np.concatenate([[0], cuts, [docs]]))
            parts = [make_task(rng, skill, PRECISIONS, int(k), kind) for k in sizes]
            tasks.append((f"group{t}", kind, parts))
        else:
            tasks.append((f"task{t}", kind, make_task(rng, skill, PRECISIONS, docs, kind)))
    return tasks


def whole(task):
    """A task's documents as one array (a group's subtasks concatenated)."""
    return task if isinstance(task, np.ndarray) else np.concatenate(task, axis=1)


def run(args) -> dict:
    timings = {}
    t_all = time.perf_counter()

    t0 = time.perf_counter()
    board = make_board(args.models, args.tasks, args.groups, args.continuous, args.seed)
    timings["make_board"] = time.perf_counter() - t0
    rows = args.models * len(PRECISIONS)
    docs = [whole(x).shape[1] for _, _, x in board]
    print(
        f"board: {args.models} models x {len(PRECISIONS)} precisions = {rows} rows, "
        f"{len(board)} tasks ({args.groups} grouped, {args.continuous} continuous), "
        f"{min(docs)}-{max(docs)} docs (total {sum(docs)}); "
        f"{timings['make_board']:.1f} s, RSS {peak_rss_mib():.0f} MiB",
        flush=True,
    )

    # 1. every pair on every task
    t0 = time.perf_counter()
    per_task, flat_p = [], []
    for _, kind, x in board:
        r = S.compare_task(x, binary=kind == "binary")
        per_task.append({k: r[k] for k in ("diff", "se", "n")})
        flat_p.append(S.upper_triangle(r["p"]))
    timings["pairs_per_task"] = time.perf_counter() - t0

    # 2. the average
    t0 = time.perf_counter()
    avg = S.average_difference(per_task)
    flat_p.append(S.upper_triangle(avg["p"]))
    timings["pairs_average"] = time.perf_counter() - t0

    # 3. multiplicity over the whole board
    t0 = time.perf_counter()
    family = np.concatenate(flat_p)
    holm = S.adjust_pvalues(family, "holm")
    bh = S.adjust_pvalues(family, "bh")
    timings["adjust_holm_bh"] = time.perf_counter() - t0
    n_pairs = rows * (rows - 1) // 2

    # 4. rank intervals and ties
    t0 = time.perf_counter()
    rank, low, high = S.rank_intervals(
        [whole(x) for _, _, x in board], n_boot=args.boot, seed=args.seed
    )
    groups = S.tie_groups(rank, low, high)
    timings["rank_intervals"] = time.perf_counter() - t0

    # 5. TOST: each model x task x lower precision against the model's fp32 row
    t0 = time.perf_counter()
    verdicts = {}
    fp32 = np.arange(args.models) * len(PRECISIONS)
    for _, kind, x in board:
        w = whole(x)
        margin = 0.01 if kind == "binary" else 0.05  # 1 point / 0.05 nats
        for k, p in enumerate(PRECISIONS[1:], start=1):
            r = S.tost(w[fp32], w[fp32 + k], margin=margin, binary=kind == "binary")
            for v, c in zip(*np.unique(r["verdict"], return_counts=True)):
                key = f"{p} {v}"
                verdicts[key] = verdicts.get(key, 0) + int(c)
    timings["tost"] = time.perf_counter() - t0

    # 6. minimum detectable effect per task
    t0 = time.perf_counter()
    mde_unpaired, mde_paired = [], []
    for _, kind, x in board:
        if kind != "binary":
            continue
        w = whole(x)
        disc = np.mean(w[fp32] != w[fp32 + 1])  # fp32 vs bf16 discordance
        mde_unpaired.append(float(S.minimum_detectable_effect(w.shape[1], p0=w.mean())))
        mde_paired.append(
            float(S.minimum_detectable_effect(w.shape[1], paired_discordance=max(disc, 1e-6)))
        )
    timings["mde"] = time.perf_counter() - t0

    total = time.perf_counter() - t_all
    result = {
        "rows": rows,
        "models": args.models,
        "precisions": PRECISIONS,
        "tasks": len(board),
        "grouped_tasks": args.groups,
        "continuous_tasks": args.continuous,
        "docs_min": min(docs),
        "docs_max": max(docs),
        "docs_total": sum(docs),
        "pairs_per_task": n_pairs,
        "comparisons": int(family.size),
        "bootstrap_draws": args.boot,
        "seed": args.seed,
        "significant_raw_0.05": int((family < 0.05).sum()),
        "significant_holm_0.05": int((holm < 0.05).sum()),
        "significant_bh_0.05": int((bh < 0.05).sum()),
        "tie_groups": int(groups.max() + 1),
        "rows_with_rank_interval_width_0": int((low == high).sum()),
        "median_rank_interval_width": float(np.median(high - low)),
        "tost_verdicts": dict(sorted(verdicts.items())),
        "mde_unpaired_median_points": 100 * float(np.median(mde_unpaired)),
        "mde_paired_fp32_bf16_median_points": 100 * float(np.median(mde_paired)),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "total_s": round(total, 3),
        "total_without_board_s": round(total - timings["make_board"], 3),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "numpy": np.__version__,
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--tasks", type=int, default=60)
    ap.add_argument("--groups", type=int, default=6, help="tasks that are groups of subtasks")
    ap.add_argument("--continuous", type=int, default=4, help="tasks with continuous outcomes")
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap draws of rank intervals")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    result = run(args)
    t = result["timings_s"]
    print(
        f"{result['comparisons']:,} pairwise comparisons ({result['tasks']} tasks + average, "
        f"{result['pairs_per_task']:,} pairs each): {t['pairs_per_task']:.2f} s per-task, "
        f"{t['pairs_average']:.2f} s average, Holm+BH {t['adjust_holm_bh']:.2f} s; "
        f"significant at 0.05: raw {result['significant_raw_0.05']:,}, "
        f"Holm {result['significant_holm_0.05']:,}, BH {result['significant_bh_0.05']:,}"
    )
    print(
        f"rank intervals ({result['bootstrap_draws']} draws): {t['rank_intervals']:.2f} s, "
        f"{result['tie_groups']} tie groups, median interval width "
        f"{result['median_rank_interval_width']:g}"
    )
    print(f"TOST vs fp32: {t['tost']:.2f} s, {result['tost_verdicts']}")
    print(
        f"MDE per task: {t['mde']:.3f} s; median {result['mde_unpaired_median_points']:.1f} "
        f"points unpaired, {result['mde_paired_fp32_bf16_median_points']:.2f} paired (fp32 vs bf16)"
    )
    print(
        f"total {result['total_s']:.1f} s ({result['total_without_board_s']:.1f} s without "
        f"building the board), peak RSS {result['peak_rss_mib']:.0f} MiB"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    main()
