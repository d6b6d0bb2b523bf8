"""How long the HTML report takes to build, and how large it is, on a large board.

Writes a synthetic but complete workspace the way a run leaves it: N models (a
``manifest.json`` with a parameter count each), T tasks (real task YAML and jsonl
documents; a tenth of them generation tasks with a regex filter), P precisions; one
prediction shard per model x precision x task with its sidecar, score files computed
by the real scorer, the leaderboard and the precision agreement built by the real code.
Then times ``build_report`` (what the workflow's ``report`` rule runs, verify --fast
included) and prints the time and the report's size on disk.

    .venv/bin/python -m bench.report_scale                    # 100 models x 60 tasks x 3 precisions
    .venv/bin/python -m bench.report_scale --workspace .      # the default run's report
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

PRECISIONS = ["fp32", "bf16", "nf4", "fp16", "int8"]
MC_TASK = """task: {name}
dataset: {{source: {name}.jsonl}}
doc_to_text: "Question: {{{{q}}}}\\nAnswer:"
doc_to_choice: "{{{{options}}}}"
doc_to_target: gold
metrics: [acc, acc_norm]
primary_metric: acc_norm
"""
GEN_TASK = """task: {name}
dataset: {{source: {name}.jsonl}}
output_type: generate_until
doc_to_text: "Q: {{{{q}}}}\\nA:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs: {{until: ["Q:"], max_gen_toks: 32}}
filter_list:
  - name: strict-match
    filter: [{{function: regex, regex_pattern: "The answer is (\\\\-?[0-9]+)"}}, {{function: take_first}}]
metric_list:
  - {{metric: exact_match, aggregation: mean, higher_is_better: true, ignore_case: true}}
primary_metric: exact_match,strict-match
"""


def make_tasks(root: Path, n_tasks: int, n_gen: int, n_docs: int) -> dict:
    from llmboard.tasks.definitions import load_task

    tasks_dir = root / "tasks"
    tasks_dir.mkdir(parents=True)
    tasks = {}
    for t in range(n_tasks):
        gen = t >= n_tasks - n_gen
        name = f"{'gen' if gen else 'task'}{t:03d}"
        if gen:
            rows = [{"q": f"What is {d} plus {t}?", "answer": str(d + t)} for d in range(n_docs)]
        else:
            rows = [
                {
                    "q": f"In task {t}, which option answers question number {d}?",
                    "options": [f"option {c} of {d}" for c in "abcd"],
                    "gold": (d * 7 + t) % 4,
                }
                for d in range(n_docs)
            ]
        (tasks_dir / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmpl = GEN_TASK if gen else MC_TASK
        (tasks_dir / f"{name}.yaml").write_text(tmpl.format(name=name))
        tasks[name] = load_task(tasks_dir / f"{name}.yaml")
    return tasks


def make_model(work: Path, name: str, parameters: int) -> tuple[str, str]:
    """A converted model's folder as the plan names it: manifest.json (and the fetch
    record of its checkpoint), no weights."""
    from llmboard.atomic import write_json
    from llmboard.hashing import sha256_json, short

    key = short(sha256_json(name))
    sha = sha256_json({"weights": name})
    model = work / "resources/models" / name / key
    ckpt = work / "resources/checkpoints" / name / key
    write_json(
        model / "manifest.json",
        {"checkpoint_sha256": sha, "parameters": parameters, "files": {}},
    )
    write_json(
        ckpt / "fetch.json",
        {
            "files": {},
            "source": {
                "kind": "url",
                "location": f"https://example.invalid/{name}",
                "revision": None,
                "sha256": None,
            },
        },
    )
    return f"resources/models/{name}/{key}", sha


def _mc_frame(task, docs, skill: float, noise: float, rng):
    import polars as pl

    from llmboard.tasks.documents import fewshot_pool
    from llmboard.tasks.prompts import build_requests

    reqs = build_requests(task, docs, pool=fewshot_pool(task))
    rows = {
        k: []
        for k in (
            "doc_id",
            "choice",
            "n_choices",
            "gold",
            "choice_chars",
            "ctx_tokens",
            "cont_tokens",
            "loglikelihood",
            "is_greedy",
            "context",
            "continuation",
            "from_store",
        )
    }
    for r in reqs:
        ll = (
            -rng.uniform(2, 8)
            + (3 * skill if r["choice"] == r["gold"] else 0)
            + rng.gauss(0, noise)
        )
        for k in rows:
            rows[k].append(r.get(k))
        rows["loglikelihood"][-1] = ll
        rows["ctx_tokens"][-1] = len(r["context"]) // 4
        rows["cont_tokens"][-1] = max(1, len(r["continuation"]) // 4)
        rows["is_greedy"][-1] = False
        rows["from_store"][-1] = False
    from llmboard.inference.predictions import PREDICTION_COLUMNS, _polars_schema

    return pl.DataFrame(rows, schema=_polars_schema(PREDICTION_COLUMNS))


def _gen_frame(task, docs, skill: float, rng):
    import polars as pl

    from llmboard.inference.predictions import GENERATION_COLUMNS, _polars_schema
    from llmboard.tasks.documents import fewshot_pool
    from llmboard.tasks.prompts import build_generation_requests

    reqs = build_generation_requests(task, docs, pool=fewshot_pool(task))
    # doc_fields, repeat, seed: only in the files of tasks that need them (not this one)
    columns = {
        k: v for k, v in GENERATION_COLUMNS.items() if k not in ("doc_fields", "repeat", "seed")
    }
    rows = {k: [] for k in columns}
    for i, r in enumerate(reqs):
        target = str(docs[i]["answer"])
        right = rng.random() < skill
        gen = f" Let me add. The answer is {target if right else int(target) + 1}."
        for k, v in (
            ("doc_id", i),
            ("context", r["context"]),
            ("until", ["Q:"]),
            ("max_gen_toks", 32),
            ("ctx_tokens", len(r["context"]) // 4),
            ("generation", gen),
            ("gen_tokens", 12),
            ("stop_reason", "until"),
            ("targets", [target]),
            ("from_store", False),
        ):
            rows[k].append(v)
    return pl.DataFrame(rows, schema=_polars_schema(columns))


def make_predictions(work, model, key_dir, sha, precision, task, skill, noise, rng):
    from bench.verify_scale import _docs  # documents and fingerprint, read once per task
    from llmboard.atomic import write_json
    from llmboard.hashing import sha256_file

    docs, fingerprint = _docs(task)
    key = key_dir.rsplit("/", 1)[1]
    base = f"results/predictions/{model}/{key}/{precision}/{task.name}/{task.hash}"
    (work / base).mkdir(parents=True, exist_ok=True)
    parquet, info = f"{base}/0-of-1.parquet", f"{base}/0-of-1.json"
    if task.output_type == "generate_until":
        df = _gen_frame(task, docs, skill, rng)
    else:
        df = _mc_frame(task, docs, skill, noise, rng)
    df.write_parquet(work / parquet)
    t1 = 1.8e9 + rng.random() * 1e5
    write_json(
        work / info,
        {
            "model_dir": key_dir,
            "checkpoint_sha256": sha,
            "precision": precision,
            "task": task.name,
            "task_hash": task.hash,
            "task_definition": task.spec,
            "n_docs_total": len(docs),
            "dataset_fingerprint": fingerprint,
            "shard": 0,
            "n_shards": 1,
            "doc_ids": [0, len(docs)],
            "n_requests": df.height,
            "token_budget": 2048,
            "final_token_budget": 2048,
            "seed": 1234,
            "device_map": {"": 0},
            "peak_memory": {"host_max_rss_mb": 2000.0, "cuda:0_peak_mb": 9000.0},
            "engine_stats": {"forward_tokens": 40 * df.height, "batches": 2},
            "seconds": {"load": round(10 + rng.random(), 3), "inference": 2.0},
            "cuda_visible_devices": "0",
            "interval": [t1, t1 + 2.0],
            "finished": "2026-11-26T00:00:00+00:00",
            "llmboard_version": "bench",
            "git_commit": None,
            "libraries": {},
            "parquet_sha256": sha256_file(work / parquet),
            "parquet_bytes": (work / parquet).stat().st_size,
        },
    )
    return parquet, info


def build_board(
    work: Path, n_models: int, n_tasks: int, n_prec: int, n_docs: int, n_gen: int, seed: int = 0
) -> list[str]:
    """The synthetic workspace; returns the displayed tasks."""
    from llmboard.results.agreement import write_agreement
    from llmboard.results.board_statistics import _defaults as statistics_defaults
    from llmboard.results.leaderboard import write_leaderboard
    from llmboard.tasks.scoring import score

    rng = random.Random(seed)
    tasks = make_tasks(work, n_tasks, n_gen, n_docs)
    cwd = os.getcwd()
    os.chdir(work)  # files name each other relative to the run's folder, as in a run
    try:
        scores, preds = [], {}
        for m in range(n_models):
            name = f"model{m:03d}"
            key_dir, sha = make_model(work, name, int(1e8 * (1 + m % 70)))
            skill = rng.random()
            for p in PRECISIONS[:n_prec]:
                noise = {"fp32": 0.0, "bf16": 0.05, "fp16": 0.05, "int8": 0.2}.get(p, 0.5)
                for task in tasks.values():
                    parquet, info = make_predictions(
                        work, name, key_dir, sha, p, task, skill, noise, rng
                    )
                    out = (
                        parquet.replace("results/predictions", "results/scores").rsplit("/", 2)[0]
                        + f"/{task.hash}-bench.json"
                    )
                    score(
                        [parquet],
                        [info],
                        out,
                        model=name,
                        metrics=task.metrics,
                        primary_metric=task.primary_metric,
                    )
                    scores.append(out)
                    preds[(name, p, task.name)] = [parquet]
        display = sorted(tasks)
        t0 = time.monotonic()
        # as the leaderboard rule writes it: with the board's statistics and comparisons
        write_leaderboard(
            scores,
            "results/leaderboard",
            display,
            stats=statistics_defaults(),
            comparisons_prefix="results/comparisons",
        )
        t1 = time.monotonic()
        write_agreement(preds, "results/precision_agreement")
        print(
            f"leaderboard with statistics: {t1 - t0:.1f} s; "
            f"precision agreement: {time.monotonic() - t1:.1f} s",
            flush=True,
        )
    finally:
        os.chdir(cwd)
    return display


def report_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def time_report(work: Path, out: Path, display, tasks_dir, verify: str) -> dict:
    from llmboard.results.report import build_report

    cwd = os.getcwd()
    os.chdir(work)
    try:
        t0 = time.monotonic()
        info = build_report(
            out,
            "results/leaderboard.parquet",
            agreement="results/precision_agreement.parquet",
            display=display,
            benchmarks="benchmarks",
            tasks_dir=tasks_dir,
            verify=verify,
            threads=2,
        )
        info["wall"] = time.monotonic() - t0
    finally:
        os.chdir(cwd)
    return info


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--tasks", type=int, default=60)
    ap.add_argument("--precisions", type=int, default=3)
    ap.add_argument("--docs", type=int, default=20, help="documents per task")
    ap.add_argument("--generation-tasks", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--verify", default="fast", choices=["fast", "full", "off"])
    ap.add_argument("--workspace", help="build the report of an existing run's folder instead")
    ap.add_argument(
        "--display",
        nargs="*",
        help="with --workspace: the displayed tasks (default: the published CSV's columns)",
    )
    ap.add_argument("--keep", help="copy the synthetic report here to look at it")
    ap.add_argument(
        "--board-dir", help="write the synthetic board here and reuse it when it is there"
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.workspace:
            work = Path(args.workspace).resolve()
            display, tasks_dir = args.display or None, work / "tasks"
            what = f"workspace {work}"
        else:
            work = Path(args.board_dir).resolve() if args.board_dir else tmp / "work"
            t0 = time.monotonic()
            reused = (work / "results/leaderboard.parquet").exists()
            if reused:
                display = None  # the board's own columns
            else:
                display = build_board(
                    work,
                    args.models,
                    args.tasks,
                    args.precisions,
                    args.docs,
                    args.generation_tasks,
                )
            tasks_dir = work / "tasks"
            n_files = sum(1 for _ in (work / "results").rglob("*") if _.is_file())
            print(
                f"synthetic board: {args.models} models x {args.tasks} tasks "
                f"({args.generation_tasks} generation) x {args.precisions} precisions, "
                f"{args.docs} docs each: {n_files} files "
                + ("(reused)" if reused else f"written in {time.monotonic() - t0:.0f} s"),
                flush=True,
            )
            what = "synthetic board"
        times, info = [], None
        for i in range(args.rounds):
            out = tmp / f"report{i}"
            info = time_report(work, out, display, tasks_dir, args.verify)
            times.append(info["wall"])
            size = report_size(out)
            print(
                f"round {i + 1}: {info['wall']:.2f} s, {size / 1e6:.1f} MB "
                f"({size / 2**20:.1f} MiB) in {info['files']} files; "
                f"steps {info['timings']}",
                flush=True,
            )
        if args.keep and info is not None:
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.copytree(tmp / f"report{args.rounds - 1}", args.keep)
        print(
            f"{what}: report of {info['scores']} scores built in "
            f"min {min(times):.2f} s / median {statistics.median(times):.2f} s "
            f"(verify {args.verify}); {size / 1e6:.1f} MB on disk; "
            f"verify problems: {info['verify_problems']}"
        )


if __name__ == "__main__":
    main()
