"""What the report shows, gathered from the files a run already wrote.

The published long board (``leaderboard.parquet``) names the score file of every task
row; each score file names its prediction shards; each shard's sidecar names its model
folder (``manifest.json``: parameters) and holds the resolved task definition. From
these alone (no config, no plan) this module builds frames for the pages:

- ``wide``: one row per model x precision, each displayed task's primary metric and
  its value normalised so that chance is 0 (``(x - chance) / (1 - chance)``, as the
  Open LLM Leaderboard does; chance = mean of 1/number of choices over the documents,
  0 for generation tasks), averages and ranks of both;
- ``answers``: per run (model x precision x task) and document, the answer the primary
  metric takes (the arg-max choice, or the filtered generation) and whether it is
  right; from them the precision comparison (paired difference, flips, McNemar) and
  the per-instance drill-down;
- ``shards``: per prediction shard, what it cost (sidecar timings, tokens, memory).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ...inference.precisions import REFERENCE_ORDER
from ...tasks.definitions import GENERATE, ROLLING
from ..leaderboard import average_of, averaged_tasks, rank_of
from .stats import mcnemar_exact

# bits per weight of each precision (the x axis of the precision plot)
BITS = {"fp32": 32, "bf16": 16, "fp16": 16, "int8": 8, "nf4": 4}


class ReportError(ValueError):
    """An input the report cannot be built from; the message names the file."""


def precision_key(precision: str) -> tuple:
    """Sort key of precisions: the reference order (fp32 first), then any other by name."""
    if precision in REFERENCE_ORDER:
        return (REFERENCE_ORDER.index(precision), precision)
    return (len(REFERENCE_ORDER), precision)


@dataclass
class Run:
    """One score of the board: a model x precision x task and the files behind it."""

    model: str
    precision: str
    task: str
    score_file: str
    score: dict
    parquets: list[Path]
    infos: list[Path]
    metas: list[dict] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.model} · {self.precision}"


@dataclass
class TaskInfo:
    name: str
    kind: str  # multiple_choice, multiple_input, generate_until, or group
    spec: dict
    task_hash: str | None
    shots: int | None
    primary_metric: str
    n_docs: int | None
    chance: float
    members: list[str] = field(default_factory=list)  # groups: member tasks


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: {what} not readable: {e}") from None


def read_board(path: Path):
    import polars as pl

    try:
        return pl.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - polars' errors do not name the file
        raise ReportError(f"{path}: leaderboard not readable: {e}") from None


def read_runs(long, workdir: Path) -> list[Run]:
    """Every score file the board's task rows name, read with the leaderboard's own
    check (an unreadable or edited score file is refused, naming it), with the
    sidecars of its prediction shards."""
    import polars as pl

    from ..leaderboard import LeaderboardError, read_score

    rows = (
        long.filter(~pl.col("is_group"))
        .select("model", "precision", "task", "score_file")
        .unique()
        .sort("model", "precision", "task", "score_file")
    )
    runs, seen = [], set()
    for model, precision, task, sf in rows.iter_rows():
        if (model, precision, task) in seen:  # superseded score files of one task: keep one
            continue
        seen.add((model, precision, task))
        try:
            s = read_score(workdir / sf)
        except LeaderboardError as e:
            raise ReportError(str(e)) from None
        named = s.get("predictions") or {}
        if not named.get("parquets"):
            raise ReportError(
                f"{sf}: names no prediction files (older llmboard); rerun to re-score"
            )
        run = Run(
            model,
            precision,
            task,
            sf,
            s,
            [workdir / p for p in named["parquets"]],
            [workdir / p for p in named["infos"]],
        )
        run.metas = [_read_json(p, "prediction sidecar") for p in run.infos]
        runs.append(run)
    return runs


# ---------------------------------------------------------------- tasks
def task_infos(runs: list[Run], long, groups: dict | None) -> dict[str, TaskInfo]:
    import polars as pl

    from ...tasks.definitions import Task

    out: dict[str, TaskInfo] = {}
    for r in runs:
        if r.task in out:
            continue
        spec = r.metas[0]["task_definition"]
        t = Task(r.task, spec, Path("."))
        kind = t.output_type
        out[r.task] = TaskInfo(
            r.task,
            kind,
            spec,
            r.metas[0]["task_hash"],
            int((spec.get("fewshot") or {}).get("n") or 0),
            r.score["primary_metric"],
            int(r.metas[0]["n_docs_total"]),
            0.0,
        )
    members = group_members(groups or {})
    for name in long.filter(pl.col("is_group"))["task"].unique().sort().to_list():
        metric = long.filter((pl.col("task") == name) & pl.col("is_group"))["metric"][0]
        out[name] = TaskInfo(
            name, "group", {}, None, None, metric, None, 0.0, sorted(members.get(name, []))
        )
    return out


def group_members(groups: dict) -> dict[str, list[str]]:
    """Group or subgroup name -> member tasks (``groups`` as the plan gives them)."""
    out = {}
    for name, g in groups.items():
        out[name] = [t for ts in g["subgroups"].values() for t in ts]
        for sub, ts in g["subgroups"].items():
            out[sub] = list(ts)
    return out


# ---------------------------------------------------------------- per-document answers
def read_predictions(paths: list[Path], columns: list[str]):
    """``columns`` of prediction files, with a ``file`` column; one multi-file scan
    (shards written by different llmboard versions may differ in other columns), and
    file by file when that fails, to name the file that cannot be read."""
    import polars as pl

    try:
        return (
            pl.scan_parquet(
                [str(p) for p in paths],
                include_file_paths="file",
                extra_columns="ignore",
                missing_columns="insert",
            )
            .select(*columns, "file")
            .collect()
        )
    except Exception:  # noqa: BLE001 - find the file, below
        pass
    frames = []
    for p in paths:
        try:
            present = set(pl.read_parquet_schema(p))
            df = pl.read_parquet(p, columns=[c for c in columns if c in present])
        except Exception as e:  # noqa: BLE001 - polars' errors do not name the file
            raise ReportError(f"{p}: prediction file not readable: {e}") from None
        # a column only some tasks' files hold (doc_fields, repeat) is null in the others
        missing = [pl.lit(None).alias(c) for c in columns if c not in present]
        frames.append(df.with_columns(*missing, file=pl.lit(str(p))).select(*columns, "file"))
    return pl.concat(frames, how="diagonal_relaxed")


def _mc_answers(run_ids: list[int], runs: list[Run], norm: bool):
    """doc-level frame for multiple-choice runs: run, doc_id, pick, correct, ll, gold."""
    import polars as pl

    cols = ["doc_id", "choice", "n_choices", "gold", "choice_chars", "loglikelihood", "is_greedy"]
    paths = [p for i in run_ids for p in runs[i].parquets]
    run_of = pl.DataFrame(
        {"file": [str(p) for p in paths], "run": [i for i in run_ids for _ in runs[i].parquets]},
        schema={"file": pl.String, "run": pl.Int32},
    )
    df = read_predictions(paths, cols).join(run_of, on="file").drop("file")
    g = (
        df.sort("run", "doc_id", "choice")
        .group_by("run", "doc_id", maintain_order=True)
        .agg(
            ll=pl.col("loglikelihood"),
            chars=pl.col("choice_chars"),
            gold=pl.col("gold").first(),
            n_choices=pl.col("n_choices").first(),
            greedy=pl.col("is_greedy").first(),
        )
    )
    # lm-eval: acc takes the arg-max log-likelihood, acc_norm the arg-max per character
    # (first choice on ties, as metrics.per_doc_metrics); one target per document
    # (output_type loglikelihood): acc is is_greedy
    key = pl.col("ll") / pl.col("chars") if norm else pl.col("ll")
    single = pl.col("n_choices") == 1
    return (
        g.with_columns(pick=key.list.arg_max().cast(pl.Int32))
        .with_columns(
            correct=pl.when(single)
            .then(pl.col("greedy"))
            .otherwise(pl.col("pick") == pl.col("gold"))
            .cast(pl.Int8),
        )
        .with_columns(
            answer=pl.when(single)
            .then(pl.col("correct").cast(pl.String))
            .otherwise(pl.col("pick").cast(pl.String))
        )
        .drop("greedy")
    )


def _rolling_answers(run_ids: list[int], runs: list[Run]):
    """doc-level frame for loglikelihood_rolling runs: each document's log-likelihood
    (the drill-down's detail); there is no answer and nothing right or wrong."""
    import polars as pl

    frames = []
    for i in run_ids:
        df = read_predictions(runs[i].parquets, ["doc_id", "loglikelihood"]).drop("file")
        frames.append(
            df.select(
                pl.lit(i, pl.Int32).alias("run"),
                "doc_id",
                pl.col("loglikelihood").round(4).cast(pl.String).alias("answer"),
                pl.lit(None, pl.Int8).alias("correct"),
                pl.concat_list("loglikelihood").alias("ll"),
            )
        )
    return pl.concat(frames)


def check_text(detail: dict | None) -> str | None:
    """What decided a generation's score, in words: a math answer's checks
    (``exact_match: equivalent · math_verify: different``), a program's outcome
    (``passed``, ``failed: AssertionError``, ``timed_out: ...``)."""
    if not detail:
        return None
    if "programs" in detail:
        return "; ".join(
            o["status"] + (f": {o['reason']}" if o["status"] != "passed" and o["reason"] else "")
            for o in detail["programs"]
        )
    return " · ".join(
        f"{k.removesuffix('_check')}: {v}" for k, v in detail.items() if k.endswith("_check")
    )


def _recorded(score: dict, filt: str | None) -> tuple[dict | None, list | None]:
    """A score's recorded details (filter -> per document), and the primary filter's."""
    from ...tasks.scoring import recorded_details

    recorded = recorded_details(score)
    if recorded is None:
        return None, None
    return recorded, recorded[filt if filt in recorded else next(iter(recorded))]


def _generation_answers(run_ids: list[int], runs: list[Run], primary: str):
    import polars as pl

    from ...tasks.errors import ScoreError
    from ...tasks.metrics import per_doc_generation_metrics

    filt = primary.split(",", 1)[1] if "," in primary else None
    frames = []
    for i in run_ids:
        r = runs[i]
        df = read_predictions(
            r.parquets, ["doc_id", "generation", "targets", "doc_fields", "repeat"]
        )
        for optional in ("doc_fields", "repeat"):  # only in some tasks' files
            if df[optional].null_count() == df.height:
                df = df.drop(optional)
        recorded, shown = _recorded(r.score, filt)
        try:
            # math checks and programs are not run again: the score's record is used,
            # after checking that it is of these generations
            per_doc = per_doc_generation_metrics(
                df.drop("file"), r.metas[0]["task_definition"], recorded=recorded
            )
        except ScoreError as e:
            raise ReportError(f"{r.parquets[0]}: {e}") from None
        answers = (
            per_doc["answers"][filt]
            if filt in per_doc["answers"]
            else next(iter(per_doc["answers"].values()))
        )
        correct = per_doc["metrics"].get(primary) or next(iter(per_doc["metrics"].values()))
        n = len(per_doc["doc_id"])
        frames.append(
            pl.DataFrame(
                {
                    "run": [i] * n,
                    "doc_id": per_doc["doc_id"],
                    "generation": per_doc["generation"],
                    "answer": [a if isinstance(a, str) else "\n\n".join(a) for a in answers],
                    # pass@k of several samples is a fraction: the drill-down shows 0/1
                    "correct": [int(c >= 0.5) for c in correct],
                    "check": [check_text(d) for d in shown] if shown else [None] * n,
                },
                schema={
                    "run": pl.Int32,
                    "doc_id": pl.Int64,
                    "generation": pl.String,
                    "answer": pl.String,
                    "correct": pl.Int8,
                    "check": pl.String,
                },
            )
        )
    return pl.concat(frames)


def task_answers(task: TaskInfo, runs: list[Run], run_ids: list[int]):
    """Per run and document of one task: the primary metric's answer and 0/1."""
    if task.kind == GENERATE:
        return _generation_answers(run_ids, runs, task.primary_metric)
    if task.kind == ROLLING:
        return _rolling_answers(run_ids, runs)
    return _mc_answers(run_ids, runs, task.primary_metric == "acc_norm")


def task_prompts(task: TaskInfo, run: Run):
    """The rendered prompts of one run (the same for every run of a task hash): per
    document its context and choices, or (generation) its context and targets."""
    import polars as pl

    if task.kind == GENERATE:
        df = read_predictions(run.parquets, ["doc_id", "context", "targets"]).drop("file")
        return df.sort("doc_id")
    if task.kind == ROLLING:  # the scored text is the whole prompt
        df = read_predictions(run.parquets, ["doc_id", "text"]).drop("file")
        return df.rename({"text": "context"}).sort("doc_id")
    df = read_predictions(run.parquets, ["doc_id", "choice", "context", "continuation"])
    return (
        df.sort("doc_id", "choice")
        .group_by("doc_id", maintain_order=True)
        .agg(pl.col("context"), pl.col("continuation"))
    )


def instances_payload(task, runs, ids: list[int], ans, prompts) -> dict:
    """The drill-down of one task: every document with its prompt and choices (or
    targets), and per run its answer, 0/1 and log-likelihoods (or generation)."""
    import polars as pl

    order = sorted(ids, key=lambda i: (runs[i].model, precision_key(runs[i].precision)))
    pos = {i: k for k, i in enumerate(order)}
    meta = pl.DataFrame(
        {
            "run": order,
            "model": [runs[i].model for i in order],
            "precision": [runs[i].precision for i in order],
        },
        schema={"run": pl.Int32, "model": pl.String, "precision": pl.String},
    )
    a = ans.join(meta, on="run")
    prec_dis = (
        a.group_by("doc_id", "model")
        .agg(d=pl.col("answer").n_unique() > 1)
        .group_by("doc_id")
        .agg(pd=pl.col("d").any())
    )
    model_dis = (
        a.group_by("doc_id", "precision")
        .agg(d=pl.col("answer").n_unique() > 1)
        .group_by("doc_id")
        .agg(md=pl.col("d").any())
    )
    gen, rolling = task.kind == GENERATE, task.kind == ROLLING
    detail = pl.col("generation") if gen else pl.col("ll").list.eval(pl.element().round(4))
    answer = pl.col("answer") if gen or rolling else pl.col("pick")
    if "check" not in a.columns:  # only math and code tasks say what decided a score
        a = a.with_columns(check=pl.lit(None, pl.String))
    check = pl.col("check")
    per_doc = (
        a.sort("doc_id", "run")
        .group_by("doc_id", maintain_order=True)
        .agg(
            pl.col("run"),
            answer.alias("answer"),
            pl.col("correct"),
            detail.alias("detail"),
            check.alias("check"),
        )
        .join(prompts, on="doc_id", how="left")
        .join(prec_dis, on="doc_id", how="left")
        .join(model_dis, on="doc_id", how="left")
        .sort("doc_id")
    )
    if not gen and not rolling:
        gold = a.group_by("doc_id").agg(pl.col("gold").first())
        per_doc = per_doc.join(gold, on="doc_id", how="left").sort("doc_id")
    n = len(order)
    docs = []
    for r in per_doc.iter_rows(named=True):
        answers, oks, details, checks = [None] * n, [None] * n, [None] * n, [None] * n
        for i, x, ok, d, c in zip(r["run"], r["answer"], r["correct"], r["detail"], r["check"]):
            k = pos[i]
            answers[k], oks[k], details[k], checks[k] = x, ok, d, c
        if gen:
            prompt, choices, gold = r["context"], list(r["targets"] or []), None
        elif rolling:
            prompt, choices, gold = r["context"], [], None
        elif task.kind == "multiple_input":
            prompt, choices, gold = r["continuation"][0], list(r["context"]), r["gold"]
        else:
            prompt, choices, gold = r["context"][0], list(r["continuation"]), r["gold"]
        docs.append(
            [
                r["doc_id"],
                prompt,
                choices,
                gold,
                answers,
                oks,
                details,
                bool(r["pd"]),
                bool(r["md"]),
                checks,
            ]
        )
    return {
        "task": task.name,
        "kind": task.kind,
        "metric": task.primary_metric,
        "runs": [[runs[i].model, runs[i].precision] for i in order],
        "docs": docs,
    }


# ---------------------------------------------------------------- precision comparison
def compare_precisions(answers_by_task: dict, runs: list[Run], agreement):
    """Each precision against the highest one evaluated of the same model, per task, on
    the primary metric, document by document: mean difference (other - reference) and
    its paired standard error, the share of documents whose answer flips, the discordant
    counts and their exact McNemar test."""
    import polars as pl

    rank = {p: i for i, p in enumerate(REFERENCE_ORDER)}
    meta = pl.DataFrame(
        {
            "run": list(range(len(runs))),
            "model": [r.model for r in runs],
            "precision": [r.precision for r in runs],
            "prank": [rank.get(r.precision, len(rank)) for r in runs],
        },
        schema={"run": pl.Int32, "model": pl.String, "precision": pl.String, "prank": pl.Int64},
    )
    # the reference of each model x task: its best-ranked precision
    parts = []
    for task, ans in sorted(answers_by_task.items()):
        if ans["correct"].null_count() == ans.height:  # rolling: no answers to compare
            continue
        a = ans.select("run", "doc_id", "answer", "correct").join(meta, on="run")
        ref_prec = a.group_by("model").agg(
            reference=pl.col("precision").sort_by("prank", "precision").first()
        )
        a = a.join(ref_prec, on="model")
        ref = a.filter(pl.col("precision") == pl.col("reference")).select(
            "model",
            "doc_id",
            pl.col("answer").alias("answer_ref"),
            pl.col("correct").alias("correct_ref"),
        )
        other = a.filter(pl.col("precision") != pl.col("reference"))
        j = other.join(ref, on=["model", "doc_id"], how="inner")
        d = pl.col("correct").cast(pl.Float64) - pl.col("correct_ref").cast(pl.Float64)
        parts.append(
            j.group_by("model", "precision", "reference")
            .agg(
                n_docs=pl.len(),
                delta=d.mean(),
                sd=d.std(ddof=1),
                flip_rate=(pl.col("answer") != pl.col("answer_ref")).cast(pl.Float64).mean(),
                ref_only_right=((pl.col("correct_ref") == 1) & (pl.col("correct") == 0)).sum(),
                other_only_right=((pl.col("correct_ref") == 0) & (pl.col("correct") == 1)).sum(),
            )
            .with_columns(task=pl.lit(task))
        )
    schema = {
        "model": pl.String,
        "task": pl.String,
        "precision": pl.String,
        "reference": pl.String,
        "n_docs": pl.Int64,
        "delta": pl.Float64,
        "delta_stderr": pl.Float64,
        "flip_rate": pl.Float64,
        "ref_only_right": pl.Int64,
        "other_only_right": pl.Int64,
        "mcnemar_p": pl.Float64,
    }
    if not parts:
        out = pl.DataFrame(schema=schema)
    else:
        out = pl.concat(parts).with_columns(
            delta_stderr=pl.col("sd") / pl.col("n_docs").cast(pl.Float64).sqrt()
        )
        out = out.with_columns(
            mcnemar_p=pl.Series(
                [
                    mcnemar_exact(b, c)
                    for b, c in zip(out["ref_only_right"], out["other_only_right"])
                ],
                dtype=pl.Float64,
            )
        ).select([pl.col(k).cast(v) for k, v in schema.items()])
    if agreement is not None and agreement.height:
        ll = agreement.select("model", "task", "precision", "mean_abs_dll", "max_abs_dll")
        out = out.join(ll, on=["model", "task", "precision"], how="left")
    else:
        out = out.with_columns(
            mean_abs_dll=pl.lit(None, pl.Float64), max_abs_dll=pl.lit(None, pl.Float64)
        )
    return out.sort("model", "task", "precision")


# ---------------------------------------------------------------- the leaderboard
def chances(tasks: dict[str, TaskInfo], answers_by_task: dict, runs: list[Run]) -> None:
    """Chance level of each task (in place): 1/choices averaged over documents, 0 for
    generation tasks; a group's is its members' size-weighted mean."""
    import polars as pl

    for name, ans in answers_by_task.items():
        t = tasks[name]
        if t.kind in (GENERATE, ROLLING):  # no choices (a perplexity is not normalised)
            t.chance = 0.0
            continue
        first = ans.filter(pl.col("run") == ans["run"].min())
        t.chance = float((1.0 / first["n_choices"].cast(pl.Float64)).mean())
    for t in tasks.values():
        if t.kind == "group":
            ms = [tasks[m] for m in t.members if m in tasks and tasks[m].n_docs]
            n = sum(m.n_docs for m in ms)
            t.chance = sum(m.chance * m.n_docs for m in ms) / n if n else 0.0


def normalised(value, chance: float):
    return (value - chance) / (1.0 - chance) if chance < 1 else value


def wide_board(long, display: list[str], tasks: dict[str, TaskInfo], parameters: dict):
    """The published wide board (rank, model, precision, average, tasks) plus prompting,
    parameters, and every score normalised as the Open LLM Leaderboard v2 does
    (``(x - chance) / (1 - chance) * 100``, below chance 0) with its own average and rank."""
    import polars as pl

    from ..leaderboard import build_wide

    wide = build_wide(long, display)
    if "prompting" in long.columns:
        prompting = long.group_by("model", "precision").agg(
            pl.col("prompting").drop_nulls().first()
        )
        wide = wide.join(prompting, on=["model", "precision"], how="left")
    else:
        wide = wide.with_columns(prompting=pl.lit("raw"))
    wide = wide.with_columns(
        prompting=pl.col("prompting").fill_null("raw"),
        parameters=pl.col("model").replace_strict(parameters, default=None, return_dtype=pl.Int64),
    )
    norm = []
    for t in display:
        ch = tasks[t].chance if t in tasks else 0.0
        k = 1.0 / (1.0 - ch) if ch < 1 else 1.0
        # the Open LLM Leaderboard v2's normalisation, in points: chance 0, perfect 100,
        # below chance clipped to 0 (statistics.normalised_score); its stderr scaled alike
        norm += [
            (((pl.col(t) - ch) * k).clip(lower_bound=0.0) * 100).alias(f"{t}_norm"),
            (pl.col(f"{t}_stderr") * k * 100).alias(f"{t}_norm_stderr"),
        ]
    # the board's rules: no average (and no rank) for a row missing a task
    wide = wide.with_columns(norm).with_columns(
        average_norm=average_of(
            [f"{t}_norm" for t in display],
            [f"{t}_norm" for t in averaged_tasks(long, display)],
        )
    )
    wide = wide.with_columns(rank_norm=rank_of(pl.col("average_norm")))
    return wide


def model_parameters(runs: list[Run], workdir: Path) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for r in runs:
        if r.model in out:
            continue
        mdir = r.metas[0].get("model_dir")
        manifest = workdir / mdir / "manifest.json" if mdir else None
        try:
            out[r.model] = int(json.loads(manifest.read_text())["parameters"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            out[r.model] = None  # the model folder is gone: parameters unknown
    return out


# ---------------------------------------------------------------- cost
def shard_costs(runs: list[Run]):
    """One row per prediction shard, from its sidecar."""
    import polars as pl

    rows = []
    for r in runs:
        for info, m in zip(r.infos, r.metas):
            peak = m.get("peak_memory") or {}
            gpu_peaks = [v for k, v in peak.items() if k.startswith("cuda:")]
            stats = m.get("engine_stats") or {}
            secs = m.get("seconds") or {}
            interval = m.get("interval") or [None, None]
            cvd = m.get("cuda_visible_devices")
            placed = {str(v) for v in (m.get("device_map") or {}).values()}
            gpus = (
                len([d for d in str(cvd).split(",") if d.strip()])
                if cvd
                else len({d for d in placed if d not in ("cpu", "disk")})
            )
            rows.append(
                {
                    "model": r.model,
                    "precision": r.precision,
                    "task": r.task,
                    "shard": f"{m.get('shard', 0)}/{m.get('n_shards', 1)}",
                    "requests": m.get("n_requests"),
                    "forward_tokens": stats.get("forward_tokens"),
                    "load_s": secs.get("load"),
                    "inference_s": secs.get("inference"),
                    "host_peak_mb": peak.get("host_max_rss_mb"),
                    "gpu_peak_mb": max(gpu_peaks) if gpu_peaks else None,
                    "gpus": gpus,
                    "store_hits": stats.get("store_hits"),
                    "started": interval[0],
                    "finished": interval[1],
                    "model_dir": m.get("model_dir"),
                    "sidecar": str(info),
                }
            )
    schema = {
        "model": pl.String,
        "precision": pl.String,
        "task": pl.String,
        "shard": pl.String,
        "requests": pl.Int64,
        "forward_tokens": pl.Int64,
        "load_s": pl.Float64,
        "inference_s": pl.Float64,
        "host_peak_mb": pl.Float64,
        "gpu_peak_mb": pl.Float64,
        "gpus": pl.Int64,
        "store_hits": pl.Int64,
        "started": pl.Float64,
        "finished": pl.Float64,
        "model_dir": pl.String,
        "sidecar": pl.String,
    }
    return pl.DataFrame(rows, schema=schema)


def read_benchmarks(folder: Path | None):
    """Snakemake's per-job benchmark files: rule, job, wall seconds, peak RSS, end time."""
    import polars as pl

    rows = []
    if folder is not None and Path(folder).is_dir():
        for f in sorted(Path(folder).rglob("*.tsv")):
            try:
                t = pl.read_csv(f, separator="\t", n_rows=1)
                rows.append(
                    {
                        "rule": f.relative_to(folder).parts[0],
                        "job": str(f.relative_to(folder).with_suffix(""))[
                            len(f.relative_to(folder).parts[0]) + 1 :
                        ],
                        "wall_s": float(t["s"][0]),
                        "max_rss_mb": _num(t, "max_rss"),
                        "cpu_s": _num(t, "cpu_time"),
                        "ended": f.stat().st_mtime,
                    }
                )
            except Exception:  # noqa: BLE001 - a benchmark file being written, or foreign
                continue
    schema = {
        "rule": pl.String,
        "job": pl.String,
        "wall_s": pl.Float64,
        "max_rss_mb": pl.Float64,
        "cpu_s": pl.Float64,
        "ended": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)


def _num(t, col: str):
    try:
        v = t[col][0]
        return None if v in (None, "-", "NA") else float(v)
    except Exception:  # noqa: BLE001 - a column a Snakemake version does not write
        return None


def inference_jobs(shards, benchmarks):
    """Shards grouped into the inference jobs that wrote them (same model folder,
    precision and model-load time: one load per job), each matched to its Snakemake
    benchmark when one ended within a minute of the job's last shard."""
    import polars as pl

    if shards.is_empty():
        return shards
    jobs = (
        shards.group_by("model", "precision", "model_dir", "load_s")
        .agg(
            shards=pl.len(),
            tasks=pl.col("task").n_unique(),
            requests=pl.col("requests").sum(),
            forward_tokens=pl.col("forward_tokens").sum(),
            inference_s=pl.col("inference_s").sum(),
            host_peak_mb=pl.col("host_peak_mb").max(),
            gpu_peak_mb=pl.col("gpu_peak_mb").max(),
            gpus=pl.col("gpus").max(),
            started=pl.col("started").min(),
            finished=pl.col("finished").max(),
        )
        .with_columns(
            tokens_per_s=pl.col("forward_tokens") / pl.col("inference_s"),
            span_s=pl.col("finished") - pl.col("started") + pl.col("load_s"),
        )
        .sort("started", "model", "precision")
    )
    infer = benchmarks.filter(pl.col("rule") == "infer")
    matched = []
    for r in jobs.iter_rows(named=True):
        best = None
        prefix = f"{r['model']}/{r['precision']}/"
        for b in infer.iter_rows(named=True):
            if not b["job"].startswith(prefix) or r["finished"] is None:
                continue
            gap = abs(b["ended"] - r["finished"])
            if gap < 60 and (best is None or gap < best[0]):
                best = (gap, b)
        b = best[1] if best else None
        matched.append(
            {
                "job": b["job"].split("/")[-1] if b else None,
                "wall_s": b["wall_s"] if b else r["span_s"],
                "bench_rss_mb": b["max_rss_mb"] if b else None,
            }
        )
    return pl.concat(
        [
            jobs,
            pl.DataFrame(
                matched, schema={"job": pl.String, "wall_s": pl.Float64, "bench_rss_mb": pl.Float64}
            ),
        ],
        how="horizontal",
    )
