"""A long job's progress on stderr: the real engine reports, StatusLine shows it as one
line rewritten in place on a terminal, as a few plain lines elsewhere, never in the log."""

from __future__ import annotations

import io
import logging
import re

from llmboard import progress
from llmboard.inference.api import GenerationRequest, LoglikelihoodRequest
from llmboard.inference.engine import TransformersLM


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _engine(tiny_dirs, invariant=True):
    from llmboard.inference.loading import load_model

    model, tok, _ = load_model(tiny_dirs["llama"], "fp32")
    return TransformersLM(model, tok, token_budget=64, batch_invariant=invariant)


def _requests(n):
    return [
        LoglikelihoodRequest(f"Question {i}: what is {i} plus {i}?", f" {2 * i}") for i in range(n)
    ]


def test_plain_stream_gets_a_line_per_item_start_and_end(tiny_dirs, caplog):
    lm = _engine(tiny_dirs)
    out = io.StringIO()
    caplog.set_level(logging.INFO)
    with progress.status_line("infer m fp32", stream=out, every=60):
        progress.item(1, 2, "t shard 0/1")
        lm.loglikelihood(_requests(24))
        progress.item(2, 2, "g shard 0/1")
        lm.generate_until([GenerationRequest(f"Count: {i}", ("\n",), 5) for i in range(3)])
    lines = out.getvalue().splitlines()
    assert lm.stats["batches"] > 4  # many reports, few lines
    assert lines[0] == "[infer m fp32] 1/2 t shard 0/1: starting"
    assert re.fullmatch(
        r"\[infer m fp32\] 1/2 t shard 0/1: 24/24 requests, [\d,]+ tok/s, done in 0:\d\d", lines[1]
    )
    assert lines[2] == "[infer m fp32] 2/2 g shard 0/1: starting"
    assert re.fullmatch(
        r"\[infer m fp32\] 2/2 g shard 0/1: 3/3 prompts, [\d,]+ generated tok/s, done in 0:\d\d",
        lines[3],
    )
    assert len(lines) == 4
    # the job's log file (logging) gets the engine's lines, not these
    assert not [r for r in caplog.records if "starting" in r.getMessage()]
    assert [r for r in caplog.records if r.name == "llmboard.inference.engine"]


def test_terminal_gets_one_line_rewritten_in_place(tiny_dirs, monkeypatch):
    lm = _engine(tiny_dirs, invariant=False)
    clock = iter(range(0, 10_000))  # each report a second later: every one is shown
    monkeypatch.setattr(progress.time, "monotonic", lambda: float(next(clock)))
    term = Terminal()
    with progress.status_line("infer m bf16", stream=term):
        progress.item(1, 1, "t shard 0/1")
        lm.loglikelihood(_requests(24))
    text = term.getvalue()
    assert "\n" not in text[:-1] and text.endswith("\n")
    frames = [f.rstrip() for f in text[:-1].split("\r") if f]
    assert frames[0] == "[infer m bf16] 1/1 t shard 0/1: starting"
    done = [int(re.search(r": (\d+)/24 requests", f).group(1)) for f in frames[1:]]
    assert done == sorted(done) and done[-1] == 24 and len(done) > 2
    assert all(re.search(r"tok/s, ~\d+:\d\d left$", f) for f in frames[1:-1] if "0/24" not in f)
    assert re.search(r": 24/24 requests, [\d,]+ tok/s, done in \d+:\d\d$", frames[-1])


def test_outside_a_job_nothing_is_shown(tiny_dirs, capsys):
    """Library use (no status line): the engine's reports print nothing."""
    lm = _engine(tiny_dirs)
    capsys.readouterr()  # the weights' loading bar
    lm.loglikelihood(_requests(4))
    assert capsys.readouterr().err == "" and progress._shown == []
