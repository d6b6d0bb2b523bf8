"""The perplexity task types through the real workflow (fp32 and bf16, the tiny Llama):
a rolling task over a local .txt corpus and a last-word loglikelihood task beside a
multiple-choice one. Predictions, scores, the board (a perplexity is shown, never
averaged), the precision agreement (rolling: log-likelihoods only; loglikelihood: the
answer is is_greedy), the report and `llmboard verify`."""

import csv
import io
import json

import polars as pl
import pytest

from conftest import save_tiny
from workspace import Workspace

CORPUS = (
    "The river runs past the old mill and into the sea.\n\n"
    "Every morning the baker opens the shop at six.\n\n"
    "Numbers such as 12 and 7 add up to 19 in the end.\n"
)
MC = """task: add
dataset: {source: add.jsonl, split: validation}
doc_to_text: "Question: {{q}}\\nAnswer:"
doc_to_choice: "{{options}}"
doc_to_target: gold
"""
LAST_WORD = """task: last_word
dataset: {source: words.jsonl, split: validation}
output_type: loglikelihood
doc_to_text: "{{text.split(' ')[:-1]|join(' ')}}"
doc_to_target: "{{' '+text.split(' ')[-1]}}"
metrics: [perplexity, acc]
primary_metric: acc
"""
ROLLING = """task: held_out
dataset: {source: corpus.txt, split: validation}
output_type: loglikelihood_rolling
doc_to_target: text
max_length: 8
"""


@pytest.mark.slow
def test_perplexity_tasks_through_the_workflow(tmp_path, tokenizer_dir):
    from llmboard.cli import main as cli

    ws = Workspace(tmp_path)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    rows = [{"q": f"{a} and {a}?", "options": [str(2 * a), "no"], "gold": 0} for a in range(6)]
    (tasks / "add.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    words = ["the cat sat on the mat", "one two three four", "red green blue"]
    (tasks / "words.jsonl").write_text("".join(json.dumps({"text": w}) + "\n" for w in words))
    (tasks / "corpus.txt").write_text(CORPUS)
    for name, text in (("add", MC), ("last_word", LAST_WORD), ("held_out", ROLLING)):
        (tasks / f"{name}.yaml").write_text(text)
    model = save_tiny("llama", tmp_path / "src", tokenizer_dir)
    ws.write_config(
        {
            "models": {"tiny": {"source": str(model)}},
            "precisions": ["fp32", "bf16"],
            "tasks": {"add": None, "last_word": None, "held_out": None},
            "tasks_dir": str(tasks),
            "inference": {"token_budget": 256, "threads": 1},
        }
    )
    ws.snakemake()
    res = ws.wd / "results"

    def predictions(precision, task):
        (p,) = (res / "predictions/tiny").glob(f"*/{precision}/{task}/*/0-of-1.parquet")
        return pl.read_parquet(p).sort("doc_id")

    # rolling: one row per paragraph, windows of at most 8 tokens
    rolled = predictions("fp32", "held_out")
    assert rolled["text"].to_list() == [p.strip() for p in CORPUS.split("\n\n")]
    assert all(w >= t / 8 for w, t in zip(rolled["windows"], rolled["tokens"]))

    # the board: held_out is shown, the average takes add and last_word only
    board = list(csv.DictReader(io.StringIO((res / "leaderboard.csv").read_text())))
    for row in board:
        assert float(row["held_out"]) > 1  # a word perplexity
        want = (float(row["add"]) + float(row["last_word"])) / 2
        assert float(row["average"]) == pytest.approx(want, abs=1e-6)

    # precision agreement, against the prediction files themselves
    agree = pl.read_parquet(res / "precision_agreement.parquet")
    held = agree.filter(pl.col("task") == "held_out").row(0, named=True)
    dll = (predictions("bf16", "held_out")["loglikelihood"] - rolled["loglikelihood"]).abs()
    assert held["flip_rate"] is None and held["delta_acc"] is None
    assert held["max_abs_dll"] == pytest.approx(dll.max()) and held["max_abs_dll"] > 0
    last = agree.filter(pl.col("task") == "last_word").row(0, named=True)
    g32, g16 = (
        predictions("fp32", "last_word")["is_greedy"],
        predictions("bf16", "last_word")["is_greedy"],
    )
    assert last["delta_acc"] == pytest.approx((g16.cast(pl.Float64) - g32.cast(pl.Float64)).mean())
    assert last["flip_rate"] == pytest.approx((g16 != g32).cast(pl.Float64).mean())
    assert (res / "report/index.html").exists()
    assert cli(["verify", str(res), "--tasks-dir", str(tasks)]) == 0
