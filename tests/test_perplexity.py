"""Perplexity tasks: lm-eval's loglikelihood (lambada_openai) and loglikelihood_rolling
output types, checked against lm-eval 0.4.13's own functions (windows, metrics) and
against a plain per-window forward pass (the engine). Fast: tiny models only."""

from __future__ import annotations

import json
import math
import random

import polars as pl
import pytest

from llmboard.inference.api import rolling_windows
from llmboard.tasks.definitions import TaskError, find_task_files, load_task
from llmboard.tasks.documents import load_docs
from llmboard.tasks.metrics import aggregate, per_doc_rolling_metrics
from llmboard.tasks.prompts import build_loglikelihood_requests, build_rolling_requests
from llmboard.tasks.scoring import compute_score

from conftest import REPO, predict_task

INDEX = find_task_files(REPO / "tasks")


# ------------------------------------------------------------------ windows
@pytest.mark.parametrize("max_length", [1, 2, 3, 7, 16, 64])
def test_windows_are_lm_evals(max_length):
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    rnd = random.Random(max_length)
    for _ in range(50):
        tokens = [rnd.randrange(1000) for _ in range(rnd.randrange(0, 5 * max_length + 3))]
        theirs = [
            make_disjoint_window(w)
            for w in get_rolling_token_windows(tokens, 999, max_length, context_len=1)
        ]
        ours = rolling_windows(tokens, 999, max_length)
        assert ours == theirs
        # every token predicted once, every window within the model's length
        assert [t for _, c in ours for t in c] == tokens
        assert all(len(a) + len(b) - 1 <= max_length for a, b in ours)


# ------------------------------------------------------------------ metrics
def test_metrics_are_lm_evals():
    from lm_eval.api.metrics import bits_per_byte, perplexity, weighted_perplexity
    from lm_eval.api.task import ConfigurableTask

    rnd = random.Random(0)
    texts = [
        " ".join("wörd" * rnd.randrange(1, 3) for _ in range(rnd.randrange(1, 40)))
        + rnd.choice(["", "\n", "  x\t y"])
        for _ in range(30)
    ]
    lls = [-rnd.uniform(1, 300) for _ in texts]
    df = pl.DataFrame({"doc_id": list(range(len(texts))), "text": texts, "loglikelihood": lls})
    ours = per_doc_rolling_metrics(df)
    words = [(ll, ConfigurableTask.count_words(t)) for ll, t in zip(lls, texts)]
    nbytes = [(ll, ConfigurableTask.count_bytes(t)) for ll, t in zip(lls, texts)]
    assert ours["word_perplexity"] == words and ours["byte_perplexity"] == nbytes
    for metric, fn, items in (
        ("word_perplexity", weighted_perplexity, words),
        ("byte_perplexity", weighted_perplexity, nbytes),
        ("bits_per_byte", bits_per_byte, nbytes),
    ):
        assert aggregate(metric, ours[metric])[0] == pytest.approx(fn(items), rel=1e-12)
    lls_short = [x / 50 for x in lls]
    value, se = aggregate("perplexity", lls_short)
    assert value == pytest.approx(perplexity(lls_short), rel=1e-12)
    # delta method: exp(-m) x se(m)
    m = sum(lls_short) / len(lls_short)
    sd = math.sqrt(sum((x - m) ** 2 for x in lls_short) / (len(lls_short) - 1))
    assert se == pytest.approx(math.exp(-m) * sd / math.sqrt(len(lls_short)), rel=1e-12)


def test_rolling_stderr_is_the_delta_method_of_the_ratio():
    """A large sample: the delta-method stderr of bits_per_byte agrees with a bootstrap."""
    rnd = random.Random(1)
    items = [(-rnd.uniform(50, 400), rnd.randrange(80, 600)) for _ in range(400)]
    value, se = aggregate("bits_per_byte", items)
    boot = []
    for _ in range(400):
        s = rnd.choices(items, k=len(items))
        boot.append(-sum(a for a, _ in s) / sum(b for _, b in s) / math.log(2))
    mu = sum(boot) / len(boot)
    sd = math.sqrt(sum((b - mu) ** 2 for b in boot) / (len(boot) - 1))
    assert se == pytest.approx(sd, rel=0.15)


# ------------------------------------------------------------------ task files
def test_shipped_tasks_render_lm_evals_requests():
    """lambada_openai's requests are lm-eval's templates on the rebuilt `text`."""
    t = load_task(INDEX["lambada_openai"], {"limit": 40})
    r = load_task(INDEX["lambada_rolling"], {"limit": 40})
    docs = load_docs(t)
    assert len(docs) == 40 and t.primary_metric == "acc"
    assert t.metrics == ["perplexity", "acc"]
    assert r.metrics == ["word_perplexity", "byte_perplexity", "bits_per_byte"]
    rows = build_loglikelihood_requests(t, docs)
    texts = [x["text"] for x in build_rolling_requests(r, load_docs(r))]
    for row, text, doc in zip(rows, texts, docs):
        assert text == doc["query"] + " " + doc["answers_text"][0]
        assert row["context"] == " ".join(text.split(" ")[:-1]) == doc["query"]
        assert row["continuation"] == " " + text.split(" ")[-1]


def _write(tmp_path, body: str, name="t.yaml"):
    (tmp_path / "d.jsonl").write_text('{"text": "a b c", "x": "y"}\n')
    p = tmp_path / name
    p.write_text("task: t\ndataset: {source: d.jsonl}\n" + body)
    return p


@pytest.mark.parametrize(
    "body,needle",
    [
        (
            "output_type: loglikelihood_rolling\ndoc_to_target: text\ndoc_to_continuation: x\n",
            "doc_to_continuation",
        ),
        (
            "output_type: loglikelihood_rolling\ndoc_to_target: text\ndoc_to_choice: [a]\n",
            "doc_to_choice",
        ),
        (
            "output_type: loglikelihood_rolling\ndoc_to_target: text\ndoc_to_text: x\n",
            "doc_to_text",
        ),
        (
            "output_type: loglikelihood_rolling\ndoc_to_target: text\nmetrics: [acc]\n",
            "metrics: unknown metric(s) ['acc']",
        ),
        (
            "output_type: loglikelihood\ndoc_to_text: x\ndoc_to_target: text\n"
            "metrics: [bits_per_byte]\n",
            "metrics: unknown metric(s) ['bits_per_byte']",
        ),
        (
            "doc_to_text: x\ndoc_to_choice: [a]\ndoc_to_target: 0\nmetrics: [perplexity]\n",
            "metrics: unknown metric(s) ['perplexity']",
        ),
        ("doc_to_text: x\ndoc_to_choice: [a]\ndoc_to_target: 0\nmax_length: 8\n", "max_length"),
        (
            "output_type: loglikelihood_rolling\ndoc_to_target: text\nnum_fewshot: 2\n",
            "num_fewshot",
        ),
    ],
)
def test_bad_perplexity_tasks_are_named_before_any_model(tmp_path, body, needle):
    p = _write(tmp_path, body)
    with pytest.raises(TaskError) as e:
        load_task(p)
    assert str(p) in str(e.value) and needle in str(e.value)


def test_max_length_is_part_of_the_task_hash(tmp_path):
    body = "output_type: loglikelihood_rolling\ndoc_to_target: text\n"
    a = load_task(_write(tmp_path, body))
    b = load_task(_write(tmp_path, body + "max_length: 64\n"))
    assert a.hash != b.hash and b.max_length == 64 and a.max_length is None


@pytest.mark.parametrize(
    "sample_by,want",
    [
        (None, ["First para\nline two.", "Second para."]),
        ("line", ["First para", "line two.", "Second para."]),
        ("document", ["First para\nline two.\n\n  \nSecond para.\n"]),
    ],
)
def test_a_txt_corpus_is_a_few_lines_of_yaml(tmp_path, sample_by, want):
    (tmp_path / "held_out.txt").write_text("First para\nline two.\n\n  \nSecond para.\n")
    extra = f", sample_by: {sample_by}" if sample_by else ""
    (tmp_path / "mine.yaml").write_text(
        f"task: my_ppl\ndataset: {{source: held_out.txt{extra}}}\n"
        "output_type: loglikelihood_rolling\ndoc_to_target: text\n"
    )
    task = load_task(tmp_path / "mine.yaml")
    assert [r["text"] for r in build_rolling_requests(task, load_docs(task))] == want


# ------------------------------------------------------------------ engine
def _plain_window_lls(model_dir, texts, window):
    """Each window through a plain forward pass, one at a time, float64 log-softmax."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    out = []
    with torch.inference_mode():
        for text in texts:
            total = 0.0
            for ctx, cont in rolling_windows(tok.encode(text), prefix, window):
                inp = (ctx + cont)[:-1]
                logits = model(torch.tensor([inp])).logits[0, -len(cont) :].double()
                lp = torch.log_softmax(logits, -1)
                total += float(lp[torch.arange(len(cont)), torch.tensor(cont)].sum())
            out.append(total)
    return out


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_rolling_engine_matches_a_plain_forward(arch, tiny_dirs, tmp_path):
    """Several windows per text (max_length 24), windows of different lengths packed
    into one batch (token budget 64), and an empty text (no window, log-likelihood 0)."""
    (tmp_path / "d.jsonl").write_text(
        "".join(
            json.dumps({"text": " ".join(f"word{i * j % 17}" for j in range(n))}) + "\n"
            for i, n in enumerate([1, 5, 12, 30, 60, 9])
        )
        + '{"text": ""}\n'
    )
    (tmp_path / "t.yaml").write_text(
        "task: tiny_ppl\ndataset: {source: d.jsonl}\noutput_type: loglikelihood_rolling\n"
        "doc_to_target: text\nmax_length: 24\n"
    )
    task = load_task(tmp_path / "t.yaml")
    info = predict_task(
        tiny_dirs[arch], "fp32", task, tmp_path / "p.parquet", tmp_path / "p.json", token_budget=64
    )
    df = pl.read_parquet(tmp_path / "p.parquet").sort("doc_id")
    want = _plain_window_lls(tiny_dirs[arch], df["text"].to_list(), 24)
    for got, ref in zip(df["loglikelihood"], want):
        assert abs(got - ref) <= 1e-5 * max(1.0, abs(ref)), (got, ref)
    assert df["max_length"].unique().to_list() == [24]
    assert df["windows"].max() > 1 and df["loglikelihood"][-1] == 0.0  # the empty text
    assert info["engine_stats"]["batches"] < df["windows"].sum()  # windows share batches
    score = compute_score(
        [str(tmp_path / "p.parquet")],
        [str(tmp_path / "p.json")],
        model="tiny",
        metrics=task.metrics,
        primary_metric=task.primary_metric,
    )
    per_doc = per_doc_rolling_metrics(df)
    for m in task.metrics:
        assert score["metrics"][m]["value"] == aggregate(m, per_doc[m])[0]


def test_lambada_openai_predictions_and_score(tiny_dirs, tmp_path):
    """loglikelihood rows (one per document) through the engine, scored as lm-eval:
    perplexity = exp(-mean ll), acc = mean is_greedy."""
    task = load_task(INDEX["lambada_openai"], {"limit": 6})
    predict_task(tiny_dirs["llama"], "fp32", task, tmp_path / "p.parquet", tmp_path / "p.json")
    df = pl.read_parquet(tmp_path / "p.parquet").sort("doc_id")
    assert df.height == 6 and df["n_choices"].to_list() == [1] * 6
    score = compute_score(
        [str(tmp_path / "p.parquet")],
        [str(tmp_path / "p.json")],
        model="tiny",
        metrics=task.metrics,
        primary_metric=task.primary_metric,
    )
    lls = df["loglikelihood"].to_list()
    ppl = score["metrics"]["perplexity"]
    assert ppl["value"] == pytest.approx(math.exp(-sum(lls) / 6), rel=1e-12)
    assert ppl["stderr"] > 0
    assert score["metrics"]["acc"]["value"] == sum(df["is_greedy"]) / 6


def test_the_request_store_keeps_rolling_totals(tiny_dirs, tmp_path):
    from llmboard.inference.api import LoadOptions, load_backend
    from llmboard.inference.request_store import RequestStore, StoredLM

    lm, _, ctx = load_backend(
        "transformers", tiny_dirs["llama"], "fp32", LoadOptions(token_budget=128)
    )
    texts = ["one two three four five six", "seven eight", "one two three four five six"]
    fresh = lm.loglikelihood_rolling(texts, 4)
    store = RequestStore(tmp_path / "store", ctx.checkpoint_sha256, "fp32", lm.numerics)
    first = StoredLM(lm, store).loglikelihood_rolling(texts, 4)
    again = StoredLM(
        lm, RequestStore(tmp_path / "store", ctx.checkpoint_sha256, "fp32", lm.numerics)
    )
    second = again.loglikelihood_rolling(texts, 4)
    assert [r.loglikelihood for r in first] == [r.loglikelihood for r in fresh]
    assert [r.from_store for r in first] == [False] * 3
    assert [(r.loglikelihood, r.tokens, r.windows) for r in second] == [
        (r.loglikelihood, r.tokens, r.windows) for r in fresh
    ]
    assert all(r.from_store for r in second) and again.hits == 3
    # another window size is another request
    third = again.loglikelihood_rolling(texts[:1], 8)
    assert not third[0].from_store
