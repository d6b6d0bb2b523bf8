"""How long `llmboard verify` takes on a large board, full and fast.

Builds a synthetic but complete workspace: N models (a small safetensors checkpoint
each, fetched from a local source and converted, with fetch.json and manifest.json),
T tasks (real YAML and jsonl documents), P precisions; prediction shards with their
sidecars, score files computed by the real scorer, and the leaderboard built by the
real code. Then times `verify` in both modes on it, interleaved (full, fast, full,
fast, ...), and prints the minimum and median of each.

    .venv/bin/python -m bench.verify_scale --models 100 --tasks 20 --precisions 3
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PRECISIONS = ["fp32", "bf16", "fp16", "int8", "nf4"]


def make_tasks(root: Path, n_tasks: int, n_docs: int) -> dict:
    from llmboard.tasks.definitions import load_task

    tasks_dir = root / "tasks"
    tasks_dir.mkdir(parents=True)
    tasks = {}
    for t in range(n_tasks):
        name = f"task{t:03d}"
        rows = [
            {"q": f"Question {t}.{d}?", "options": ["a", "b", "c", "d"], "gold": d % 4}
            for d in range(n_docs)
        ]
        (tasks_dir / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (tasks_dir / f"{name}.yaml").write_text(
            f"task: {name}\ndataset: {{source: {name}.jsonl}}\n"
            'doc_to_text: "{{q}}"\ndoc_to_choice: "{{options}}"\ndoc_to_target: gold\n'
            "metrics: [acc, acc_norm]\nprimary_metric: acc_norm\n"
        )
        tasks[name] = load_task(tasks_dir / f"{name}.yaml")
    return tasks


def make_model(work: Path, name: str, weight_bytes: int) -> tuple[str, str]:
    """A local source, its fetched copy and its converted folder, as the workflow leaves them."""
    import torch
    from safetensors.torch import save_file

    from llmboard.atomic import write_json
    from llmboard.checkpoints.manifest import build_manifest
    from llmboard.hashing import sha256_file

    key = f"{abs(hash(name)) % 16**12:012x}"
    src = work / "sources" / name
    src.mkdir(parents=True)
    w = torch.randn(weight_bytes // 4)
    save_file({"model.layers.0.mlp.weight": w.reshape(-1, 16)}, str(src / "model.safetensors"))
    (src / "config.json").write_text(json.dumps({"model_type": "llama"}))
    ckpt = work / "resources/checkpoints" / name / key
    model = work / "resources/models" / name / key
    for d in (ckpt, model):
        d.mkdir(parents=True)
        for f in src.iterdir():
            (d / f.name).write_bytes(f.read_bytes())
    write_json(
        ckpt / "fetch.json",
        {
            "files": {f.name: sha256_file(f) for f in sorted(src.iterdir())},
            "source": {"kind": "local", "location": str(src), "revision": None, "sha256": None},
        },
    )
    manifest = build_manifest(model)
    write_json(model / "manifest.json", manifest)
    return f"resources/models/{name}/{key}", manifest["checkpoint_sha256"]


_DOCS: dict = {}


def _docs(task) -> tuple[list, str]:
    from llmboard.tasks.documents import dataset_fingerprint, load_docs

    if task.name not in _DOCS:
        docs = load_docs(task)
        _DOCS[task.name] = (docs, dataset_fingerprint(docs))
    return _DOCS[task.name]


def make_predictions(work, model, key_dir, sha, precision, task, rng) -> tuple[str, str]:
    import polars as pl

    from llmboard.atomic import write_json
    from llmboard.hashing import sha256_file

    docs, fingerprint = _docs(task)
    base = f"results/predictions/{model}/{key_dir.rsplit('/', 1)[1]}/{precision}/{task.name}/{task.hash}"
    (work / base).mkdir(parents=True, exist_ok=True)
    parquet, info = f"{base}/0-of-1.parquet", f"{base}/0-of-1.json"
    n = len(docs)
    pl.DataFrame(
        {
            "doc_id": [d for d in range(n) for _ in range(4)],
            "choice": [c for _ in range(n) for c in range(4)],
            "n_choices": [4] * (4 * n),
            "gold": [d % 4 for d in range(n) for _ in range(4)],
            "choice_chars": [1] * (4 * n),
            "loglikelihood": [-rng.random() * 10 for _ in range(4 * n)],
        }
    ).write_parquet(work / parquet)
    write_json(
        work / info,
        {
            "model_dir": key_dir,
            "checkpoint_sha256": sha,
            "precision": precision,
            "task": task.name,
            "task_hash": task.hash,
            "task_definition": task.spec,
            "n_docs_total": n,
            "dataset_fingerprint": fingerprint,
            "n_shards": 1,
            "token_budget": 2048,
            "final_token_budget": 2048,
            "seed": 1234,
            "device_map": {},
            "llmboard_version": "bench",
            "git_commit": None,
            "libraries": {},
            "finished": "bench",
            "parquet_sha256": sha256_file(work / parquet),
            "parquet_bytes": (work / parquet).stat().st_size,
        },
    )
    return parquet, info


def build(
    work: Path, n_models: int, n_tasks: int, n_prec: int, n_docs: int, weight_bytes: int
) -> None:
    import os

    from llmboard.results.leaderboard import write_leaderboard
    from llmboard.tasks.scoring import score

    rng = random.Random(0)
    tasks = make_tasks(work, n_tasks, n_docs)
    cwd = os.getcwd()
    os.chdir(work)  # files name each other relative to the run's folder, as in a run
    try:
        scores = []
        for m in range(n_models):
            name = f"model{m:03d}"
            key_dir, sha = make_model(work, name, weight_bytes)
            for p in PRECISIONS[:n_prec]:
                for task in tasks.values():
                    parquet, info = make_predictions(work, name, key_dir, sha, p, task, rng)
                    out = (
                        parquet.replace("results/predictions", "results/scores").rsplit("/", 2)[0]
                        + f"/{task.hash}-bench.json"
                    )
                    score(
                        [parquet],
                        [info],
                        out,
                        model=name,
                        metrics=["acc", "acc_norm"],
                        primary_metric="acc_norm",
                    )
                    scores.append(out)
        write_leaderboard(scores, "results/leaderboard", sorted(tasks))
    finally:
        os.chdir(cwd)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--precisions", type=int, default=3)
    ap.add_argument("--docs", type=int, default=50)
    ap.add_argument("--weight-kib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workspace", help="verify an existing run's folder instead (its results/)")
    ap.add_argument("--tasks-dir", help="with --workspace: its task folder")
    args = ap.parse_args()

    from llmboard.results.verify import verify

    with tempfile.TemporaryDirectory() as tmp:
        if args.workspace:
            work, tasks_dir = Path(args.workspace), Path(args.tasks_dir or REPO / "tasks")
        else:
            work, tasks_dir = Path(tmp), Path(tmp) / "tasks"
            t0 = time.perf_counter()
            build(work, args.models, args.tasks, args.precisions, args.docs, args.weight_kib * 1024)
            print(
                f"built {args.models} models x {args.tasks} tasks x {args.precisions} "
                f"precisions in {time.perf_counter() - t0:.1f} s"
            )
        times: dict[str, list[float]] = {"full": [], "fast": []}
        for _ in range(args.rounds):
            for mode in ("full", "fast"):
                r = verify(work / "results", tasks_dir, fast=mode == "fast")
                assert not r.problems, r.problems[:5]
                times[mode].append(r.seconds)
        print(
            f"{r.scores} score files, {r.prediction_files} prediction files, "
            f"{r.models} models, {r.board_rows} leaderboard rows"
        )
        for mode, ts in times.items():
            print(f"verify {mode:<4}: min {min(ts):.2f} s, median {statistics.median(ts):.2f} s")
        print(
            f"full / fast (medians): {statistics.median(times['full']) / statistics.median(times['fast']):.1f}x"
        )


if __name__ == "__main__":
    main()
