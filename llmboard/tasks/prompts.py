"""Documents -> requests: lm-eval's rendering of prompts, choices, targets and few-shot
examples."""

from __future__ import annotations

import ast
import random

from .definitions import Task, TaskError
from .documents import load_split
from .filters import template


def _render(value, doc: dict, what: str, task: Task, doc_id):
    try:
        if isinstance(value, list):
            return value
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value in doc:  # a plain field name
            return doc[value]
        return template(value).render(**doc)
    except Exception as e:  # jinja2's errors say what is undefined, we add where
        raise TaskError(f"{task.path}: {what} failed on doc {doc_id}: {e}") from e


def _as_list(rendered, what, task, doc_id) -> list:
    if isinstance(rendered, list):
        return [str(x) for x in rendered]
    try:
        out = ast.literal_eval(rendered)
    except (ValueError, SyntaxError) as e:
        raise TaskError(
            f"{task.path}: {what} on doc {doc_id} did not give a list: {rendered!r}"
        ) from e
    if not isinstance(out, (list, tuple)):
        raise TaskError(f"{task.path}: {what} on doc {doc_id} did not give a list: {rendered!r}")
    return [str(x) for x in out]


def doc_parts(task: Task, doc: dict, doc_id) -> tuple[str, list[str], int, str | None]:
    """(text, choices, gold index, continuation for multiple_input)."""
    s = task.spec
    text = _render(s["doc_to_text"], doc, "doc_to_text", task, doc_id)
    choices = _as_list(
        _render(s["doc_to_choice"], doc, "doc_to_choice", task, doc_id),
        "doc_to_choice",
        task,
        doc_id,
    )
    target = _render(s["doc_to_target"], doc, "doc_to_target", task, doc_id)
    if isinstance(target, bool):
        target = int(target)
    if isinstance(target, str):
        t = target.strip()
        if t.lstrip("-").isdigit():
            target = int(t)
        elif t in choices:
            target = choices.index(t)
        else:
            raise TaskError(
                f"{task.path}: doc_to_target on doc {doc_id} gave {target!r}, "
                f"neither an index nor one of the choices"
            )
    if not 0 <= int(target) < len(choices):
        raise TaskError(
            f"{task.path}: doc {doc_id}: target {target} outside {len(choices)} choices"
        )
    cont = None
    if task.output_type == "multiple_input":
        cont = str(_render(s["doc_to_continuation"], doc, "doc_to_continuation", task, doc_id))
    return str(text), choices, int(target), cont


def _fewshot_prefix(task: Task, doc_id: int) -> str:
    fs = task.spec["fewshot"]
    n = int(fs.get("n", 0))
    desc = task.spec.get("description") or ""
    if n == 0:
        return desc
    pool = _fewshot_pool(task)
    split = fs.get("split") or task.split
    same_split = split == task.split
    candidates = [i for i in range(len(pool)) if not (same_split and i == doc_id)]
    if fs.get("sampler", "random") == "first_n":
        chosen = candidates[:n]
    else:
        # seeded per document, so a shard gives the same prompt whatever else runs
        chosen = random.Random(f"{fs.get('seed', 1234)}:{doc_id}").sample(candidates, n)
    delim = fs.get("delimiter", "\n\n")
    shots = []
    for i in chosen:
        text, choices, gold, cont = doc_parts(task, pool[i], f"fewshot {i}")
        if task.output_type == "multiple_input":
            shots.append(choices[gold] + task.spec["target_delimiter"] + cont)
        else:
            shots.append(text + task.spec["target_delimiter"] + choices[gold])
    return desc + delim.join(shots) + delim


_POOLS: dict = {}


def _fewshot_pool(task: Task) -> list[dict]:
    key = (str(task.path), task.hash)
    if key not in _POOLS:
        split = task.spec["fewshot"].get("split") or task.split
        data = load_split(task, split)
        _POOLS[key] = [data[i] for i in range(len(data))]
    return _POOLS[key]


def build_requests(task: Task, docs: list[dict], doc_ids: list[int]) -> list[dict]:
    """One row per (doc, choice): the request and what scoring needs to know."""
    rows = []
    for doc, doc_id in zip(docs, doc_ids):
        text, choices, gold, cont = doc_parts(task, doc, doc_id)
        prefix = _fewshot_prefix(task, doc_id)
        delim = task.spec["target_delimiter"]
        for j, choice in enumerate(choices):
            if task.output_type == "multiple_input":
                context, continuation = prefix + choice, delim + cont
            else:
                context, continuation = prefix + text, delim + choice
            rows.append(
                {
                    "doc_id": doc_id,
                    "choice": j,
                    "n_choices": len(choices),
                    "gold": gold,
                    "choice_chars": len(choice),
                    "context": context,
                    "continuation": continuation,
                }
            )
    return rows
