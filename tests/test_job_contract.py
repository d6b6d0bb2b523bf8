"""The job contract: a job is one value built by the plan, and the job runner loads the
model through the backend that the settings name (``inference.backend``)."""

import json
import pickle
import re

import polars as pl
import pytest
import yaml

from llmboard.inference import api
from llmboard.settings import InferenceSettings, SettingsError, load_settings
from llmboard.workflow.items import InferJob, ScoreJob, as_params
from llmboard.workflow.jobs import run_predictions
from llmboard.workflow.plan import build_plan

from conftest import REPO

TASK = """task: add
dataset: {source: add.jsonl, split: validation}
doc_to_text: "Question: {{q}}\\nAnswer:"
doc_to_choice: "{{options}}"
doc_to_target: gold
metrics: [acc, acc_norm]
"""


def make_task(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"q": f"{a} plus {a}?", "options": [str(2 * a), "no", str(a)], "gold": 0} for a in range(6)
    ]
    (folder / "add.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "add.yaml").write_text(TASK)
    return folder


def config(tasks, source, **inference) -> dict:
    return {
        "models": {"m": {"source": str(source), "trust_remote_code": True}},
        "precisions": ["fp32"],
        "tasks": {"add": None},
        "tasks_dir": str(tasks),
        "seed": 7,
        "log_level": "DEBUG",
        "request_store": {"enabled": False},
        "resources": {"local_gpus": [0, 2]},
        "inference": {"token_budget": 512, "threads": 1, **inference},
    }


def test_a_job_is_one_value_that_survives_snakemakes_params(tmp_path):
    """Every setting an inference job uses comes from the one InferJob the plan builds,
    and it comes back equal from the plain dicts Snakemake pickles for the script."""
    tasks = make_task(tmp_path / "tasks")
    (tmp_path / "m.safetensors").write_bytes(b"stand-in")
    cfg = config(
        tasks,
        tmp_path / "m.safetensors",
        max_memory={"cpu": "3GiB"},
        batch_invariant=False,
        draft_tokens=2,
    )
    plan = build_plan(load_settings(cfg), tasks, root=tmp_path)
    (part,) = [k[2] for k in plan.infer_jobs]
    job = plan.infer_job("m", "fp32", part, str(tmp_path))
    assert (job.entry, job.precision, job.backend, job.seed, job.log_level) == (
        "m",
        "fp32",
        "transformers",
        7,
        "DEBUG",
    )
    assert job.load == api.LoadOptions(
        token_budget=512,
        max_memory={"cpu": "3GiB"},
        trust_remote_code=True,
        batch_invariant=False,
        draft_tokens=2,
    )
    assert job.model_dir == plan.model_dir("m") and job.local_gpus == (0, 2)
    assert job.request_store is None and job.prompting.is_raw
    assert [(i.spec["task"], i.parquet) for i in job.items] == [
        ("add", plan.prediction_file("m", "fp32", "add", 0))
    ]
    params = pickle.loads(pickle.dumps(as_params(job)))
    assert InferJob.from_params(params) == job
    score = plan.score_job("m", "fp32")
    assert ScoreJob.from_params(pickle.loads(pickle.dumps(as_params(score)))) == score
    assert score.log_level == "DEBUG" and [i.task for i in score.items] == ["add"]


def test_a_config_without_inference_loads_as_benchmarks_load(tmp_path):
    """Benchmarks that time the engine as a job runs it take ``LoadOptions.of`` of
    ``InferenceSettings.defaults()``: the options of a job whose config leaves
    ``inference:`` out, each one the schema file's default."""
    tasks = make_task(tmp_path / "tasks")
    (tmp_path / "m.safetensors").write_bytes(b"stand-in")
    cfg = config(tasks, tmp_path / "m.safetensors")
    del cfg["inference"]
    settings = load_settings(cfg)
    plan = build_plan(settings, tasks, root=tmp_path)
    (part,) = [k[2] for k in plan.infer_jobs]
    job = plan.infer_job("m", "fp32", part, str(tmp_path))
    assert settings.inference == InferenceSettings.defaults()
    assert job.load == api.LoadOptions.of(InferenceSettings.defaults(), trust_remote_code=True)
    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    defaults = {k: v["default"] for k, v in schema["properties"]["inference"]["properties"].items()}
    load = vars(job.load)
    assert {k: load[k] for k in load if k in defaults} == {
        k: defaults[k] for k in load if k in defaults
    }
    assert set(load) - set(defaults) == {"trust_remote_code"} and load["trust_remote_code"]


def test_unknown_backend_is_named_before_any_job(tmp_path):
    tasks = make_task(tmp_path / "tasks")
    (tmp_path / "m.safetensors").write_bytes(b"stand-in")
    settings = load_settings(config(tasks, tmp_path / "m.safetensors", backend="vllm"))
    with pytest.raises(
        SettingsError, match=r"inference\.backend: unknown backend 'vllm'.*transformers"
    ):
        build_plan(settings, tasks, root=tmp_path)


# A second backend: an LM subclass and a loader, registered under a name. This one runs
# the real engine underneath and counts the calls the job runner makes through the API.
CALLS: list[tuple[str, int]] = []


class CountingLM(api.LM):
    def __init__(self, inner: api.LM):
        self.inner, self.numerics = inner, inner.numerics

    @property
    def stats(self):
        return self.inner.stats

    @property
    def token_budget(self):
        return self.inner.token_budget

    def tokenize_pair(self, request):
        return self.inner.tokenize_pair(request)

    def loglikelihood_tokens(self, pairs):
        CALLS.append(("loglikelihood", len(pairs)))
        return self.inner.loglikelihood_tokens(pairs)

    def generate_until(self, requests):
        CALLS.append(("generate_until", len(requests)))
        return self.inner.generate_until(requests)

    def tokenize_prompt(self, text):
        return self.inner.tokenize_prompt(text)


def load_counting(model_dir, precision, options):
    from llmboard.inference.engine import load

    lm, tokenizer, context = load(model_dir, precision, options)
    return api.Loaded(CountingLM(lm), tokenizer, context)


def test_the_job_runs_the_backend_the_settings_name(tmp_path, tiny_dirs, monkeypatch, capsys):
    """A backend registered in api.BACKENDS is what the job loads (the job runner is not
    edited); its answers are what the prediction files hold. The job shows its progress
    on stderr (llmboard.progress)."""
    monkeypatch.setitem(api.BACKENDS, "counting", f"{__name__}:load_counting")
    tasks = make_task(tmp_path / "tasks")
    out = {}
    for backend in ("transformers", "counting"):
        ws = tmp_path / backend
        ws.mkdir()
        cfg = config(tasks, tiny_dirs["llama"], backend=backend)
        plan = build_plan(load_settings(cfg), tasks, root=ws)
        (part,) = [k[2] for k in plan.infer_jobs]
        job = plan.infer_job("m", "fp32", part, str(tmp_path))
        # the tiny model is already converted: point the job at it, paths under ws
        items = tuple(
            type(i)(**{**i.__dict__, "parquet": str(ws / i.parquet), "info": str(ws / i.info)})
            for i in job.items
        )
        job = InferJob.from_params(
            {
                **as_params(job),
                "model_dir": str(tiny_dirs["llama"]),
                "items": [i.__dict__ for i in items],
            }
        )
        CALLS.clear()
        capsys.readouterr()
        run_predictions(job, ws / "receipt.json")
        err = capsys.readouterr().err
        assert "[infer m fp32] 1/1 add shard 0/1: starting\n" in err
        assert re.search(r"\[infer m fp32\] 1/1 add shard 0/1: 18/18 requests, .* done in", err)
        out[backend] = pl.read_parquet(items[0].parquet)
        if backend == "counting":
            assert CALLS == [("loglikelihood", 18)]  # 6 documents x 3 choices, one call
        else:
            assert CALLS == []
    cols = ["doc_id", "choice", "loglikelihood", "is_greedy"]
    assert out["counting"].select(cols).equals(out["transformers"].select(cols))
