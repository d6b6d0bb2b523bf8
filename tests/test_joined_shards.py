"""A job's small multiple-choice shards go to the engine in one call (inference/joined.py):
files still written per shard, numbers those of separate calls bit for bit (batch-invariant
engine), and each sidecar charged its share so that the costs add up."""

from __future__ import annotations

import json

import polars as pl
import pytest
from test_job_contract import CALLS, load_counting  # noqa: F401 - the counting backend

from llmboard.inference import api
from llmboard.inference.api import load_backend
from llmboard.inference.predictions import predict_shard, shard_requests
from llmboard.settings import load_settings, schema_default
from llmboard.tasks.definitions import load_task
from llmboard.workflow.items import InferJob, as_params
from llmboard.workflow.jobs import run_predictions
from llmboard.workflow.plan import build_plan

OPS = {"add": lambda a: 2 * a, "sub": lambda a: 0, "mul": lambda a: a * a}


def make_tasks(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for name, op in OPS.items():
        rows = [
            {"q": f"{a} {name} {a}?", "options": [str(op(a)), "no", str(a + 1)], "gold": 0}
            for a in range(7)
        ]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / f"{name}.yaml").write_text(
            f"task: {name}\ndataset: {{source: {name}.jsonl, split: validation}}\n"
            'doc_to_text: "Question: {{q}}\\nAnswer:"\ndoc_to_choice: "{{options}}"\n'
            "doc_to_target: gold\nmetrics: [acc, acc_norm]\n"
        )
    return folder


@pytest.fixture
def job(tmp_path, tiny_dirs, monkeypatch):
    monkeypatch.setitem(api.BACKENDS, "counting", "test_job_contract:load_counting")
    tasks = make_tasks(tmp_path / "tasks")
    cfg = {
        "models": {"m": {"source": str(tiny_dirs["llama"])}},
        "precisions": ["fp32"],
        "tasks": {"add": None, "sub": None, "mul": None},
        "tasks_dir": str(tasks),
        "request_store": {"enabled": False},
        "inference": {"token_budget": 128, "threads": 1, "backend": "counting"},
    }
    plan = build_plan(load_settings(cfg), tasks, root=tmp_path)
    (part,) = [k[2] for k in plan.infer_jobs]
    job = plan.infer_job("m", "fp32", part, str(tmp_path))
    items = [
        {**i.__dict__, "parquet": str(tmp_path / i.parquet), "info": str(tmp_path / i.info)}
        for i in job.items
    ]
    params = {**as_params(job), "model_dir": str(tiny_dirs["llama"]), "items": items}
    return InferJob.from_params(params)


def test_small_shards_are_one_call_with_the_numbers_of_separate_ones(job, tmp_path):
    assert job.load.batch_invariant  # the default
    assert job.load.draft_tokens == schema_default("inference", "draft_tokens") > 0
    CALLS.clear()
    run_predictions(job, tmp_path / "receipt.json")
    tasks = {
        it.spec["task"]: load_task(tmp_path / "tasks" / f"{it.spec['task']}.yaml")
        for it in job.items
    }
    sizes = [len(shard_requests(tasks[it.spec["task"]], it.shard, it.n_shards)) for it in job.items]
    assert len(sizes) == 3 and sum(sizes) == 3 * 7 * 3
    assert CALLS == [("loglikelihood", sum(sizes))]  # one engine call for the three shards

    # each shard on its own, through a fresh engine: the same numbers, bit for bit
    lm, _, context = load_backend("transformers", job.model_dir, "fp32", job.load)
    cols = ["doc_id", "choice", "loglikelihood", "is_greedy", "context", "continuation"]
    for n, it in enumerate(job.items):
        alone = tmp_path / f"alone{n}.parquet"
        predict_shard(
            lm, context, tasks[it.spec["task"]], it.shard, it.n_shards, alone,
            tmp_path / f"alone{n}.json", seed=job.seed,
        )  # fmt: skip
        joined = pl.read_parquet(it.parquet)
        assert joined.select(cols).equals(pl.read_parquet(alone).select(cols)), it.parquet

    # the joined call's cost, shared out by requests: the sidecars add up to it
    infos = [json.loads(open(it.info).read()) for it in job.items]
    fresh = load_backend("transformers", job.model_dir, "fp32", job.load)[0]
    reqs = [
        r for it in job.items for r in shard_requests(tasks[it.spec["task"]], it.shard, it.n_shards)
    ]
    fresh.loglikelihood(reqs)
    for stat in ("requests", "forward_tokens", "batches"):
        assert sum(i["engine_stats"][stat] for i in infos) == fresh.stats[stat], stat
    assert [i["engine_stats"]["requests"] for i in infos] == pytest.approx(sizes, abs=1)
    assert all(i["seconds"]["inference"] > 0 for i in infos)
    assert all("joined_seconds" not in i["engine_stats"] for i in infos)


def test_runs_are_consecutive_small_choice_shards():
    from pathlib import Path

    from llmboard.inference.joined import JOIN_DOCS
    from llmboard.inference.predictions import joined_runs

    tasks = Path(__file__).resolve().parent.parent / "tasks"

    def arc(limit):
        return load_task(tasks / "arc_easy.yaml", {"limit": limit})

    gsm = load_task(tasks / "gsm8k_cot.yaml", {"limit": 4})
    shards = [
        (arc(4), 0, 1),
        (arc(8), 0, 1),
        (gsm, 0, 1),  # generation: on its own
        (arc(4), 0, 1),  # alone between two shards that are not joined
        (arc(JOIN_DOCS + 10), 0, 1),  # too large to join
        (arc(JOIN_DOCS + 10), 1, 2),  # half of it is small enough
        (arc(100), 0, 1),
        (arc(100), 0, 1),  # 137 + 100 + 100 > JOIN_DOCS: a new run
        (arc(4), 0, 1),
    ]
    assert joined_runs(shards) == [[0, 1], [5, 6], [7, 8]]
