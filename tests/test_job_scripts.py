"""The rule scripts' error handling (scripts/_common.py), run as Snakemake runs a
script: a process of its own whose stderr the person watching sees."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

# a stand-in for the ``snakemake`` object Snakemake hands a script: the fields
# ``_common.run`` reads (the script adapts it; nothing of Snakemake's runs here)
SCRIPT = """
import sys
from types import SimpleNamespace
sys.path.insert(0, {scripts!r})
from _common import run

snakemake = SimpleNamespace(log=[{log!r}], threads=1, params=SimpleNamespace(log_level="INFO"))

def main(log):
    log.info("working")
{body}

run(snakemake, main)
"""

USER_MISTAKE = """
    from llmboard.tasks.errors import TaskError
    raise TaskError("tasks/mul.yaml: doc_to_choice on doc 2 did not give a list")
"""
# a job whose every failed item was a user's mistake: how jobs.py reports them
USER_MISTAKES_IN_ITEMS = """
    from llmboard.workflow.jobs import _run_all
    from llmboard.tasks.errors import TaskError

    def bad():
        raise TaskError("tasks/mul.yaml: doc_to_choice on doc 2 did not give a list")

    _run_all([("add shard 0/1", lambda: None), ("mul shard 0/1", bad)], {receipt!r})
"""
BUG = """
    dict()["missing"]
"""
BUG_IN_AN_ITEM = """
    from llmboard.workflow.jobs import _run_all
    from llmboard.tasks.errors import TaskError

    def bad():
        raise TaskError("tasks/mul.yaml: doc_to_choice on doc 2 did not give a list")

    def bug():
        return dict()["missing"]

    _run_all([("mul shard 0/1", bad), ("add shard 0/1", bug)], {receipt!r})
"""


def _run_script(tmp_path, body: str):
    log = tmp_path / "job.log"
    body = body.format(receipt=str(tmp_path / "receipt.json")) if "receipt" in body else body
    code = SCRIPT.format(scripts=str(REPO / "scripts"), log=str(log), body=body.rstrip())
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    return run, log.read_text()


@pytest.mark.parametrize("body", [USER_MISTAKE, USER_MISTAKES_IN_ITEMS])
def test_a_users_mistake_is_its_message_without_a_stack(tmp_path, body):
    run, log = _run_script(tmp_path, body)
    assert run.returncode == 1
    message = "tasks/mul.yaml: doc_to_choice on doc 2 did not give a list"
    assert message in run.stderr and run.stderr.startswith("llmboard: ")
    assert "Traceback" not in run.stderr
    assert message in log and "Traceback" not in log
    assert "job failed" in log and "working" in log
    assert not (tmp_path / "receipt.json").exists()


@pytest.mark.parametrize("body", [BUG, BUG_IN_AN_ITEM])
def test_a_bug_keeps_its_traceback(tmp_path, body):
    """Anything else is a bug: its stack goes to stderr and to the log, and one bug
    among user mistakes keeps the whole job's stack."""
    run, log = _run_script(tmp_path, body)
    assert run.returncode == 1
    assert "Traceback" in run.stderr and "KeyError: 'missing'" in run.stderr
    assert "Traceback" in log and "KeyError: 'missing'" in log


def test_a_failed_items_frames_are_freed_before_the_next_item(tmp_path, monkeypatch):
    """A job keeps going after a failed item; what the failed item held (a forward's
    tensors, on a GPU) is freed before the next starts, not kept by its error."""
    import gc
    import logging
    import weakref

    from llmboard.workflow.jobs import BatchError, _run_all

    # (pytest's log capture would keep the logged error's traceback, and its frames)
    monkeypatch.setattr(logging.getLogger("llmboard.workflow.jobs"), "propagate", False)

    class Held:
        pass

    refs, alive = [], []

    def failing():
        held = Held()
        refs.append(weakref.ref(held))
        raise RuntimeError("out of memory, say")

    def next_item():
        gc.collect()
        alive.append(refs[0]() is not None)

    with pytest.raises(BatchError) as err:
        _run_all([("failing", failing), ("next", next_item)], tmp_path / "receipt.json")
    assert alive == [False]
    assert err.value.causes == (RuntimeError,)
