"""minerva_math: gold answers, answer checks and their timeouts against lm-eval 0.4.13.

No model here: lm-eval's own minerva_math functions (``process_docs``,
``process_results``) run on the real MATH documents that the task files read, beside
llmboard's ports, on candidate answers built from the documents (the gold answer, the
whole reference solution, another document's answer, a rewritten equivalent one). The
generations of a real model are compared in tests/test_oracle_generation.py.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from llmboard.tasks import math_answers
from llmboard.tasks.definitions import find_task_files, load_task
from llmboard.tasks.documents import load_docs
from llmboard.tasks.errors import TaskError
from llmboard.tasks.isolation import run_isolated
from llmboard.tasks.metrics import per_doc_generation_metrics
from llmboard.tasks.prompts import build_generation_requests
from llmboard.tasks.scoring import check_counts

from conftest import generation_task_file

ROOT = Path(__file__).resolve().parent.parent
TASKS = find_task_files(ROOT / "tasks")
SUBJECTS = sorted(t for t in TASKS if t.startswith("minerva_math"))


@pytest.fixture(scope="module")
def lmeval_utils():
    from lm_eval.tasks.minerva_math import utils

    return utils


def _docs(name: str, limit: int | None = None) -> tuple:
    task = load_task(TASKS[name], {"limit": limit} if limit else None)
    return task, load_docs(task)


def test_every_subject_and_math500_ships():
    assert SUBJECTS == [
        "minerva_math500",
        "minerva_math_algebra",
        "minerva_math_counting_and_prob",
        "minerva_math_geometry",
        "minerva_math_intermediate_algebra",
        "minerva_math_num_theory",
        "minerva_math_prealgebra",
        "minerva_math_precalc",
    ]
    sizes = {n: len(_docs(n)[1]) for n in SUBJECTS}
    # MATH's test split by subject (Hendrycks et al. 2021, Table 5) and MATH-500
    assert sizes == {
        "minerva_math500": 500,
        "minerva_math_algebra": 1187,
        "minerva_math_counting_and_prob": 474,
        "minerva_math_geometry": 479,
        "minerva_math_intermediate_algebra": 903,
        "minerva_math_num_theory": 540,
        "minerva_math_prealgebra": 871,
        "minerva_math_precalc": 546,
    }


def test_gold_answers_are_lmevals_on_every_document(lmeval_utils):
    """lm-eval's process_docs on each of MATH's 5,000 test problems (and MATH-500)."""
    n = 0
    for name in SUBJECTS:
        _, docs = _docs(name)
        for doc in docs:
            want = lmeval_utils.normalize_final_answer(
                lmeval_utils.remove_boxed(lmeval_utils.last_boxed_only_string(doc["solution"]))
            )
            assert doc["answer"] == want, (name, doc["problem"][:60])
            n += 1
    assert n == 5500


def _candidates(docs: list[dict]) -> list[tuple[str, dict]]:
    """Generations to score: the gold answer in Minerva's answer sentence, the reference
    solution itself (a boxed answer, no answer sentence), another document's answer, and
    an equivalent rewriting of a numeric answer."""
    out = []
    for i, d in enumerate(docs):
        other = docs[(i + 1) % len(docs)]["answer"]
        out.append((f"Final Answer: The final answer is ${d['answer']}$. I hope it is correct.", d))
        out.append((d["solution"], d))
        out.append((f"Final Answer: The final answer is ${other}$. I hope it is correct.", d))
        if d["answer"].isdigit():
            out.append(
                (
                    f"So it is $\\frac{{{2 * int(d['answer'])}}}{{2}}$.\nFinal Answer: The final "
                    f"answer is $\\frac{{{2 * int(d['answer'])}}}{{2}}$. I hope it is correct.",
                    d,
                )
            )
    return out


@pytest.fixture(scope="module")
def checked(lmeval_utils):
    """(candidates, ours through the worker processes, lm-eval's process_results in this
    main thread), on the first 12 documents of every subject."""
    cands = []
    for name in SUBJECTS[1:]:
        cands += _candidates(_docs(name, 12)[1])
    ours = math_answers.check_documents([(g, d["solution"], d["answer"]) for g, d in cands])
    theirs = [lmeval_utils.process_results(d, [g]) for g, d in cands]
    return cands, ours, theirs


def test_scores_equal_lmevals_per_document(checked):
    cands, ours, theirs = checked
    assert len(cands) > 250
    for (g, d), o, t in zip(cands, ours, theirs):
        assert (o["exact_match"], o["math_verify"]) == (t["exact_match"], t["math_verify"]), (
            g[:80],
            d["answer"],
            o,
        )
    # the candidates exercise both outcomes of both metrics
    assert {o["exact_match"] for o in ours} == {0.0, 1.0}
    assert {o["math_verify"] for o in ours} == {0.0, 1.0}
    statuses = {o["exact_match_check"] for o in ours}
    assert {"identical", "equivalent", "different"} <= statuses
    assert "timeout" not in statuses and "killed" not in statuses


def test_string_equal_answers_sympy_cannot_parse_are_counted(checked):
    """lm-eval 0.4.13 counts a string-equal pair as equivalent before parsing (older
    versions scored those answers wrong, lm-eval #4030): the check says when that rule
    decided, so the documents an older lm-eval scores differently are counted."""
    from sympy.parsing.latex import parse_latex

    cands, ours, _ = checked
    unparsed = [o for o in ours if o["exact_match_check"] == "identical_unparsed"]
    assert unparsed, "the first 12 documents of each subject hold tuples or intervals"
    for o in unparsed:
        assert o["exact_match"] == 1.0
        with pytest.raises(Exception):  # noqa: B017 - whatever the parser raises
            parse_latex(o["answer"])


def test_checks_work_from_any_thread_where_lmevals_alarm_does_not(lmeval_utils):
    """lm-eval's is_equiv sets SIGALRM, which raises outside the main thread; its blanket
    except then scores every non-identical pair wrong. llmboard's checks run in worker
    processes: the same scores from a thread as from the main thread."""
    _, docs = _docs("minerva_math_algebra", 6)
    items = [
        (f"Final Answer: The final answer is ${d['answer']}$. I hope it is correct.", d)
        for d in docs
    ]
    items += [(d["solution"], d) for d in docs]
    args = [(g, d["solution"], d["answer"]) for g, d in items]
    main = math_answers.check_documents(args)
    from_thread, lmeval_thread = [], []

    def run():
        from_thread.extend(math_answers.check_documents(args))
        lmeval_thread.extend(lmeval_utils.is_equiv("\\frac{1}{2}", "0.5") for _ in range(2))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert from_thread == main
    assert lmeval_utils.is_equiv("\\frac{1}{2}", "0.5") is True  # main thread: equivalent
    assert lmeval_thread == [False, False]  # lm-eval in a thread: silently "wrong"
    assert sum(o["exact_match"] for o in main) >= len(docs)


def test_a_timed_out_check_is_recorded_as_such():
    big = "+".join(f"\\frac{{x^{{{i}}}}}{{{i + 1}}}" for i in range(60))
    t0 = time.perf_counter()
    ok, status = math_answers.is_equiv(f"({big})^{{3}}", f"({big})^{{2}}", seconds=0.05)
    assert (ok, status) == (False, "timeout")
    assert time.perf_counter() - t0 < 5


def test_a_check_that_never_returns_is_killed_and_the_rest_go_on():
    t0 = time.perf_counter()
    got = run_isolated("time:sleep", [30, 0.01, 0.01], workers=1, hard_timeout_s=1.0)
    assert got == [("killed", None), ("ok", None), ("ok", None)]
    assert time.perf_counter() - t0 < 15
    time.sleep(0.2)
    sleepers = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"llmboard.tasks.isolation" in cmd and int(pid) != os.getpid():
                sleepers.append(pid)
    assert not sleepers  # the killed worker and the others are gone


def test_scoring_from_predictions_with_details():
    task, docs = _docs("minerva_math_algebra", 3)
    rows = build_generation_requests(task, docs)
    gens = [
        f"Final Answer: The final answer is ${docs[0]['answer']}$. I hope it is correct.",
        "I do not know.",
        docs[2]["solution"],
    ]
    df = pl.DataFrame(
        {
            "doc_id": [r["doc_id"] for r in rows],
            "generation": gens,
            "targets": [r["targets"] for r in rows],
            "doc_fields": [r["doc_fields"] for r in rows],
        }
    )
    out = per_doc_generation_metrics(df, task.spec)
    assert list(out["metrics"]) == task.metrics == ["exact_match,none", "math_verify,none"]
    assert out["metrics"]["exact_match,none"] == [1.0, 0.0, 0.0]  # no answer sentence
    assert out["metrics"]["math_verify,none"] == [1.0, 0.0, 1.0]  # the boxed answer
    d = out["details"]["none"]
    assert d[1]["answer"] == "[invalidanswer]"
    counts = check_counts(out["details"])["none"]
    assert sum(counts["exact_match_check"].values()) == 3
    # without the stored document fields the score cannot be computed
    from llmboard.tasks.errors import ScoreError

    with pytest.raises(ScoreError, match="doc_fields"):
        per_doc_generation_metrics(df.drop("doc_fields"), task.spec)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"metric_list": [{"metric": "math_verify"}]}, "math_verify needs process_results"),
        (
            {"process_results": "minerva_math", "metric_list": [{"metric": "pass_at_1"}]},
            "not given by process_results minerva_math",
        ),
        ({"process_results": "sympy_magic"}, "process_results"),
        ({"process_docs": "eval"}, "process_docs"),
    ],
)
def test_bad_math_fields_name_the_file_and_field(tmp_path, fields, message):
    doc = {"q": "1+1", "a": "2", "solution": "\\boxed{2}"}
    path = generation_task_file(tmp_path, doc, **fields)
    with pytest.raises(TaskError, match=message) as e:
        load_task(path)
    assert str(path) in str(e.value)
