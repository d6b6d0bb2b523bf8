"""The request store: a request computed once is never computed again, whichever job,
task version or model name asks for it; damaged segments are never read as answers."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import polars as pl
import pytest

from llmboard.inference.engine import LoglikelihoodRequest, TransformersLM
from llmboard.inference.request_store import RequestStore, StoredLM, survey
from llmboard.settings import load_settings
from llmboard.tasks.definitions import load_task
from llmboard.tasks.documents import load_docs
from llmboard.tasks.prompts import build_requests
from llmboard.workflow.items import InferJob, as_params
from llmboard.workflow.jobs import run_predictions
from llmboard.workflow.plan import build_plan

from conftest import save_tiny
from test_workflow import _make_tasks
from workspace import Workspace


def _lm(model_dir):
    from llmboard.inference.loading import load_model

    model, tok, context = load_model(model_dir, "fp32")
    return TransformersLM(model, tok, token_budget=512), context


def _task(tmp_path, n_docs, limit=None, edit=None):
    rows = [
        {"q": f"What is {a} plus {a + 1}?", "options": [str(2 * a + 1), "no", str(a)], "gold": 0}
        for a in range(n_docs)
    ]
    if edit is not None:
        rows[edit]["q"] = rows[edit]["q"].replace("plus", "and")
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text(
        'task: t\ndataset: {source: d.jsonl}\ndoc_to_text: "Q: {{q}}\\nA:"\n'
        'doc_to_choice: "{{options}}"\ndoc_to_target: gold\n'
    )
    task = load_task(tmp_path / "t.yaml", {"limit": limit})
    docs = load_docs(task)
    return [
        LoglikelihoodRequest(r["context"], r["continuation"])
        for r in build_requests(task, docs, list(range(len(docs))))
    ]


def _stored(lm, context, folder):
    return StoredLM(lm, RequestStore(folder, context.checkpoint_sha256, "fp32", lm.numerics))


def test_raising_a_limit_computes_exactly_the_new_documents(tiny_dirs, tmp_path):
    lm, context = _lm(tiny_dirs["llama"])
    store = tmp_path / "store"
    first = _stored(lm, context, store).loglikelihood(_task(tmp_path, 12, limit=6))
    assert lm.stats["requests"] == 6 * 3
    before = lm.stats["requests"]
    stored = _stored(lm, context, store)  # a later job: reads the store from disk
    doubled = stored.loglikelihood(_task(tmp_path, 12, limit=12))
    assert lm.stats["requests"] - before == 6 * 3  # only documents 6..11 reached the model
    assert [r.from_store for r in doubled] == [True] * 18 + [False] * 18
    assert [r.loglikelihood for r in doubled[:18]] == [r.loglikelihood for r in first]
    fresh = TransformersLM(lm.model, lm.tokenizer, token_budget=512).loglikelihood(
        _task(tmp_path, 12, limit=12)
    )
    assert max(abs(a.loglikelihood - b.loglikelihood) for a, b in zip(doubled, fresh)) < 1e-5
    assert [a.is_greedy for a in doubled] == [b.is_greedy for b in fresh]
    assert stored.stats["store_hits"] == 18 and stored.stats["store_misses"] == 18


def test_a_changed_document_computes_only_its_requests(tiny_dirs, tmp_path):
    lm, context = _lm(tiny_dirs["llama"])
    _stored(lm, context, tmp_path / "s").loglikelihood(_task(tmp_path, 8))
    before = lm.stats["requests"]
    again = _stored(lm, context, tmp_path / "s").loglikelihood(_task(tmp_path, 8, edit=5))
    assert lm.stats["requests"] - before == 3  # the three choices of document 5
    assert [i // 3 for i, r in enumerate(again) if not r.from_store] == [5, 5, 5]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_document_is_served_whole_or_computed_whole(tiny_dirs, tmp_path, precision):
    """One choice of a document edited (its context unchanged): the whole document is
    computed again, so that in batch-invariant mode every number equals a fresh run's, bit
    for bit (its other choices' rows are as wide as the edited one makes them)."""
    from llmboard.inference.loading import load_model

    model, tok, context = load_model(tiny_dirs["llama"], precision)

    def lm():
        return TransformersLM(model, tok, token_budget=512, batch_invariant=True)

    def stored(inner):
        where = (tmp_path / "s", context.checkpoint_sha256, precision, inner.numerics)
        return StoredLM(inner, RequestStore(*where))

    before = _task(tmp_path, 6)
    stored(lm()).loglikelihood(before)
    after = list(before)
    long = " and that is the answer, as anyone who counts can see for themselves" * 2
    after[3 * 2 + 2] = LoglikelihoodRequest(before[3 * 2 + 2].context, long)
    inner = lm()
    got = stored(inner).loglikelihood(after)
    assert inner.stats["requests"] == 3  # document 2 whole
    assert [r.from_store for r in got] == [i // 3 != 2 for i in range(18)]
    fresh = lm().loglikelihood(after)
    assert [(r.loglikelihood, r.is_greedy) for r in got] == [
        (r.loglikelihood, r.is_greedy) for r in fresh
    ]


def test_a_damaged_segment_is_reported_and_never_read(tiny_dirs, tmp_path):
    lm, context = _lm(tiny_dirs["llama"])
    requests = _task(tmp_path, 4)
    _stored(lm, context, tmp_path / "s").loglikelihood(requests)
    [segment] = (tmp_path / "s").rglob("*.parquet")
    segment.write_bytes(segment.read_bytes()[:-40])  # truncated
    report = survey(tmp_path / "s")[context.checkpoint_sha256]
    assert report.corrupt == [str(segment)] and report.entries == 0
    before = lm.stats["requests"]
    stored = _stored(lm, context, tmp_path / "s")
    stored.loglikelihood(requests)
    assert lm.stats["requests"] - before == len(requests)  # nothing taken from it
    assert stored.store.report.corrupt == [str(segment)]
    # the answers computed again are the same bytes: written under the same name, healed
    report = survey(tmp_path / "s")[context.checkpoint_sha256]
    assert report.corrupt == [] and report.entries == len(requests)


def _generation_requests(n):
    from llmboard.inference.api import GenerationRequest, Sampling, sample_seed

    greedy = [GenerationRequest(f"Q: What is {a} plus {a + 1}?\nA:", ("\n",), 6) for a in range(n)]
    # two repeats of one prompt: each its own seed (sample_seed of document and repeat)
    sampled = [
        GenerationRequest("Q: Name a colour.\nA:", ("\n",), 6, Sampling(0.9, 0.95, 20, s))
        for s in (sample_seed(1234, 0, 0), sample_seed(1234, 0, 1))
    ]
    return greedy + sampled


def test_raising_a_generation_limit_generates_exactly_the_new_prompts(tiny_dirs, tmp_path):
    from llmboard.inference.loading import load_model

    model, tok, context = load_model(tiny_dirs["llama"], "fp32")
    lm = TransformersLM(model, tok, token_budget=512, batch_invariant=True)

    def stored():  # a new job each time: it reads the store from disk
        where = (tmp_path / "s", context.checkpoint_sha256, "fp32", lm.numerics)
        return StoredLM(lm, RequestStore(*where), RequestStore(*where, kind="generation"))

    requests = _generation_requests(6)
    first = stored().generate_until(requests[:3] + requests[6:])
    assert lm.stats["requests"] == 5
    job = stored()
    doubled = job.generate_until(requests)
    assert lm.stats["requests"] == 5 + 3  # only prompts 3..5 reached the model
    assert [g.from_store for g in doubled] == [True] * 3 + [False] * 3 + [True] * 2
    assert doubled[:3] + doubled[6:] == [
        type(g)(g.text, g.tokens, g.stop_reason, g.context_tokens, True) for g in first
    ]
    assert job.stats["store_hits"] == 5 and job.stats["store_misses"] == 3
    fresh = TransformersLM(model, tok, token_budget=512, batch_invariant=True)
    assert [(g.text, g.tokens, g.stop_reason) for g in doubled] == [
        (g.text, g.tokens, g.stop_reason) for g in fresh.generate_until(requests)
    ]
    assert survey(tmp_path / "s")[context.checkpoint_sha256].entries == 8
    assert len(list((tmp_path / "s").rglob("generations/*.parquet"))) == 2

    # whatever decides the text is in the key: stop strings, max_gen_toks, the seed
    from dataclasses import replace

    g, s = requests[0], requests[6]
    changed = [
        replace(g, until=("\n", ".")),
        replace(g, max_gen_toks=7),
        replace(s, sampling=replace(s.sampling, seed=s.sampling.seed + 1)),
        replace(s, sampling=replace(s.sampling, temperature=0.5)),
    ]
    before = lm.stats["requests"]
    assert not any(x.from_store for x in stored().generate_until(changed))
    assert lm.stats["requests"] - before == 4


def _job_with_store(tmp_path, model_dir, precision: str, store, name: str):
    """An inference job as the plan builds it (6 documents x 3 choices, the request
    store on), run as the workflow runs it; its prediction frame and engine stats."""
    tasks = tmp_path / "tasks"
    tasks.mkdir(exist_ok=True)
    _task(tasks, 6)
    cfg = {
        "models": {"m": {"source": str(model_dir)}},
        "precisions": ["fp32", "bf16"],
        "tasks": {"t": None},
        "tasks_dir": str(tasks),
        "request_store": {"enabled": True, "folder": str(store)},
        "inference": {"token_budget": 512, "threads": 1},
    }
    ws = tmp_path / name
    ws.mkdir()
    plan = build_plan(load_settings(cfg), tasks, root=ws)
    (part,) = {k[2] for k in plan.infer_jobs if k[1] == precision}
    job = plan.infer_job("m", precision, part, str(tmp_path))
    (item,) = job.items
    item = type(item)(
        **{**item.__dict__, "parquet": str(ws / item.parquet), "info": str(ws / item.info)}
    )
    # the tiny model is already converted: point the job at it
    job = InferJob.from_params(
        {**as_params(job), "model_dir": str(model_dir), "items": [item.__dict__]}
    )
    assert job.precision == precision and job.request_store == str(store)
    run_predictions(job, ws / "receipt.json")
    info = json.loads(Path(item.info).read_text())
    assert info["precision"] == precision
    return pl.read_parquet(item.parquet).sort(["doc_id", "choice"]), info["engine_stats"]


def test_precision_and_numerics_are_in_the_store_key(tiny_dirs, tmp_path, monkeypatch):
    """The store answers a request only for the precision and engine numerics that
    computed it: bf16 jobs never read fp32 answers (nor the reverse), an engine whose
    numerics version changed reads none, and the same precision + numerics reads all."""
    model, store = tiny_dirs["llama"], tmp_path / "store"
    n = 6 * 3

    def run(precision, name):
        return _job_with_store(tmp_path, model, precision, store, name)

    fp32, stats = run("fp32", "fp32-first")
    assert (stats["store_hits"], stats["store_misses"], stats["requests"]) == (0, n, n)
    # another precision: nothing taken from the fp32 answers, every request computed
    bf16, stats = run("bf16", "bf16-first")
    assert (stats["store_hits"], stats["store_misses"], stats["requests"]) == (0, n, n)
    assert not bf16["from_store"].any()
    d = (bf16["loglikelihood"] - fp32["loglikelihood"]).abs()
    assert d.max() > 0  # bf16 answers are not fp32's: served from fp32, these would be 0
    # the same precision and numerics again: everything from the store, nothing computed
    for precision, first in (("fp32", fp32), ("bf16", bf16)):
        again, stats = run(precision, f"{precision}-again")
        assert (stats["store_hits"], stats["store_misses"], stats["requests"]) == (n, 0, 0)
        assert again["from_store"].all()
        assert again["loglikelihood"].to_list() == first["loglikelihood"].to_list()
    # an engine whose numerics changed (NUMERICS bumped): no answer of the old form is read
    monkeypatch.setattr(TransformersLM, "numerics", "e1-bumped-by-test")
    for precision in ("fp32", "bf16"):
        bumped, stats = run(precision, f"{precision}-bumped")
        assert (stats["store_hits"], stats["store_misses"], stats["requests"]) == (0, n, n)
        assert not bumped["from_store"].any()
    # one folder of answers per precision x numerics, each with every request once
    [report] = survey(store).values()
    assert report.corrupt == [] and report.entries == 4 * n
    [ckpt] = [p for p in store.iterdir() if p.is_dir()]
    assert len([p for p in ckpt.iterdir() if p.is_dir()]) == 4


def _fill(model_dir, folder, n_docs, tmp, queue):
    lm, context = _lm(model_dir)
    out = _stored(lm, context, folder).loglikelihood(_task(tmp, n_docs))
    queue.put([r.loglikelihood for r in out])


def test_two_concurrent_jobs_fill_the_store_as_one_does(tiny_dirs, tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    jobs = [
        ctx.Process(
            target=_fill, args=(tiny_dirs["llama"], tmp_path / "s", n, tmp_path / f"t{n}", queue)
        )
        for n in (10, 14)
    ]
    for i, j in enumerate(jobs):
        (tmp_path / f"t{(10, 14)[i]}").mkdir()
        j.start()
    results = sorted((queue.get(timeout=300) for _ in jobs), key=len)
    for j in jobs:
        j.join(timeout=60)
        assert j.exitcode == 0
    lm, context = _lm(tiny_dirs["llama"])
    one = TransformersLM(lm.model, lm.tokenizer, token_budget=512).loglikelihood(
        _task(tmp_path, 14)
    )
    before = lm.stats["requests"]
    stored = _stored(lm, context, tmp_path / "s").loglikelihood(_task(tmp_path, 14))
    assert lm.stats["requests"] == before  # every answer is in the store
    for got in (results[0], results[1], [r.loglikelihood for r in stored]):
        assert max(abs(a - b.loglikelihood) for a, b in zip(got, one)) < 1e-5
    report = survey(tmp_path / "s")[context.checkpoint_sha256]
    assert report.corrupt == [] and report.entries == 14 * 3


@pytest.mark.slow
def test_a_second_entry_with_the_same_weights_computes_nothing(tmp_path, tokenizer_dir, capsys):
    from llmboard.cli import main as cli

    ws = Workspace(tmp_path)
    ws.tasks = _make_tasks(tmp_path)
    src = save_tiny("llama", tmp_path / "src", tokenizer_dir)
    cfg = {
        "models": {"a": {"source": str(src)}},
        "precisions": ["fp32"],
        "tasks": {"add": {"shards": 2}, "mul": None},
        "tasks_dir": str(ws.tasks),
        "inference": {"token_budget": 512, "threads": 1},
    }
    ws.write_config(cfg)
    ws.snakemake()
    ws.write_config({**cfg, "models": {**cfg["models"], "b": {"source": str(src)}}})
    ws.snakemake()
    infos = [
        json.loads(p.read_text())
        for p in (ws.wd / "results/predictions/b").rglob("*.json")
        if p.parent.name != "_jobs"
    ]
    assert len(infos) == 3
    for info in infos:
        assert info["engine_stats"]["store_hits"] == info["n_requests"] > 0
        assert info["engine_stats"]["requests"] == 0  # nothing reached the model
    a = pl.read_csv(ws.wd / "results/leaderboard.csv").sort("model")
    assert a["average"][0] == a["average"][1]
    # the store command reports it, and keeps it while a model uses it
    assert (
        cli(["store", "--config", str(ws.wd / "config.yaml"), "--workdir", str(ws.wd), "--prune"])
        == 0
    )
    out = capsys.readouterr().out
    assert "a, b" in out and "removed" not in out
    ws.write_config(
        {
            **cfg,
            "models": {"c": {"source": str(save_tiny("gpt2", tmp_path / "other", tokenizer_dir))}},
        }
    )
    ws.snakemake()
    assert (
        cli(["store", "--config", str(ws.wd / "config.yaml"), "--workdir", str(ws.wd), "--prune"])
        == 0
    )
    assert "removed" in capsys.readouterr().out
    assert len(survey(ws.wd / ".llmboard/request-store")) == 1  # c's only
