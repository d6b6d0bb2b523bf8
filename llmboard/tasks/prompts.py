"""Documents -> requests: lm-eval 0.4.13's rendering of prompts, choices, targets and
few-shot examples, raw or with the model's chat template.

``build_requests``: multiple choice, one row per (document, choice).
``build_generation_requests``: generate_until, one row per document.
``build_loglikelihood_requests``: loglikelihood (lambada_openai), one row per document,
in ``build_requests``' form (one "choice": the target).
``build_rolling_requests``: loglikelihood_rolling, one row per document: the text.

Both build lm-eval's messages (``ConfigurableTask.fewshot_context``): the system
instruction and the description as a system message, each few-shot example as a user
turn and an assistant turn (its answer: the gold choice, or the target, a list's first
element; an empty target: the text alone), then the document's text. Raw prompts
concatenate them with the target and few-shot delimiters; a chat template renders
them (``prompting``, ``chat.renderer``). Few-shot examples are drawn as lm-eval's
samplers draw them (``_Sampler``).

Pure functions of their inputs: the caller passes the task's evaluated documents
(``documents.load_docs``) and, for a task whose examples come from a split, the
few-shot pool (``documents.fewshot_pool``). Nothing here reads a file.
"""

from __future__ import annotations

import ast
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from ..settings import RAW, Prompting
from .definitions import GENERATE, LOGLIKELIHOOD, ROLLING, Task, TaskError
from .templates import template


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


def _description(task: Task, doc: dict, doc_id) -> str:
    """lm-eval's ``resolve_field``: a field of the document, else a template on it."""
    desc = task.spec.get("description") or ""
    return str(_render(desc, doc, "description", task, doc_id)) if desc else ""


# ------------------------------------------------------------------ few-shot sampling
class _Sampler:
    """lm-eval's few-shot samplers for one task (``lm_eval/api/samplers.py``).

    ``random`` (lm-eval's ``ContextSampler``): one ``random.Random(seed)`` for the whole
    task, drawn from document by document in order, as ``build_all_requests`` walks the
    documents. Each document draws ``sample(pool, n + 1)`` and drops the copies of
    itself when the few-shot split is the evaluated one (``rm_eval_doc``: by equality,
    keeping the first ``n``), else ``sample(pool, n)``; if dropping left fewer than
    ``n``, it draws ``n`` again from the pool without the document. A document's
    examples therefore depend on the draws of every document before it: a shard that
    starts at document ``k`` replays the draws of documents ``0 .. k-1`` (drawing
    indices only; ``random.sample`` picks by position, so indices are the same draws).
    ``first_n`` (``FirstNSampler``): the first ``n`` of the pool without the document's
    copies."""

    def __init__(self, task: Task, pool: list[dict], docs: list[dict]):
        fs = task.spec["fewshot"]
        self.task = task
        self.n = int(fs.get("n", 0))
        self.kind = fs.get("sampler", "random")
        self.seed = fs.get("seed", 1234)  # lm-eval's fewshot_random_seed (default 1234)
        self.pool = pool
        self.docs = docs  # the evaluated documents: a draw excludes its own document
        split = fs.get("split") or task.split
        # lm-eval: eval_doc is passed when fewshot_split is the evaluated split; inline
        # samples (fewshot_config.samples) never are
        self.exclude = split == task.split and not uses_samples(task)
        self._rnd: random.Random | None = None
        self._next = 0  # the document whose draw comes next

    def examples(self, doc_id: int, doc: dict) -> list[int]:
        """Pool indices of document ``doc_id``'s few-shot examples, in prompt order."""
        if self.n == 0:
            return []
        if self.kind == "first_n":
            pool = [i for i in range(len(self.pool)) if not self._same(i, doc)]
            self._enough(len(pool))
            return pool[: self.n]
        if self._rnd is None or doc_id < self._next:
            self._rnd, self._next = random.Random(self.seed), 0
        while self._next < doc_id:  # replay the documents before this one
            self._draw(self.docs[self._next] if self.exclude else None)
            self._next += 1
        out = self._draw(doc if self.exclude else None)
        self._next = doc_id + 1
        return out

    def _same(self, i: int, doc: dict | None) -> bool:
        return self.exclude and doc is not None and self.pool[i] == doc

    def _enough(self, available: int, asked: int | None = None) -> None:
        asked = self.n if asked is None else asked
        if asked > available:
            raise TaskError(
                f"{self.task.path}: {self.n} few-shot examples asked for, "
                f"{len(self.pool)} in the pool"
                + (" (the evaluated document is left out)" if self.exclude else "")
            )

    def _draw(self, doc: dict | None) -> list[int]:
        size, n = len(self.pool), self.n
        if doc is None:
            self._enough(size)
            return self._rnd.sample(range(size), n)
        self._enough(size, n + 1)  # lm-eval samples n + 1 to leave room for the document
        out = [i for i in self._rnd.sample(range(size), n + 1) if self.pool[i] != doc][:n]
        if len(out) < n:  # several copies of the document were drawn
            rest = [i for i in range(size) if self.pool[i] != doc]
            self._enough(len(rest))
            out = [rest[j] for j in self._rnd.sample(range(len(rest)), n)]
        return out


def uses_samples(task: Task) -> bool:
    """Few-shot examples from ``samples`` (a split, when also given, wins, as in lm-eval)."""
    fs = task.spec["fewshot"]
    return fs.get("samples") is not None and fs.get("split") is None


def needs_pool(task: Task) -> bool:
    """Whether the task draws few-shot examples from a split (``documents.fewshot_pool``)."""
    return int(task.spec["fewshot"].get("n", 0)) > 0 and not uses_samples(task)


def _sampler(task: Task, docs: list[dict], pool: list[dict] | None) -> _Sampler | None:
    """The task's few-shot sampler for one build (None: zero-shot). Built per call: a
    random sampler replays the draws of the documents before a shard's first."""
    if int(task.spec["fewshot"].get("n", 0)) == 0:
        return None
    if uses_samples(task):
        pool = [dict(d) for d in task.spec["fewshot"]["samples"]]
    elif pool is None:
        split = task.spec["fewshot"].get("split") or task.split
        raise TaskError(
            f"{task.path}: few-shot examples come from split {split!r}: pass its documents "
            "as the pool (documents.fewshot_pool)"
        )
    return _Sampler(task, pool, docs)


def _fewshot_examples(sampler: _Sampler | None, doc_id: int, doc: dict) -> list[tuple[int, dict]]:
    """(pool index, document) of each few-shot example of document ``doc_id``."""
    if sampler is None:
        return []
    return [(i, sampler.pool[i]) for i in sampler.examples(doc_id, doc)]


# ------------------------------------------------------------------ messages
# lm-eval's prompt model (``lm_eval/api/utils.py``, ``ConfigurableTask.fewshot_context``
# and ``build_qa_turn``): a system message (system instruction and description), each
# few-shot example as a user turn (its text, then the target delimiter) and an
# assistant turn (its answer, then the few-shot delimiter), and the document as the
# last user turn. Without a chat template the turns are concatenated with their
# delimiters; with one, they are the template's messages, one per turn
# (``fewshot_as_multiturn``) or collapsed into one user message.
@dataclass
class Message:
    role: str  # system, user or assistant
    content: str
    delimiter: str = ""  # appended in plain text only

    def to_dict(self) -> dict:
        return {"role": self.role, "content": self.content}

    def to_text(self) -> str:
        return self.content + self.delimiter


def maybe_delimit(prefix: str | None, suffix: str | None, delimiter: str = " ") -> str:
    """lm-eval's ``maybe_delimit``: join, adding ``delimiter`` only if neither side has
    whitespace at the boundary."""
    if not prefix:
        return suffix or ""
    if not suffix:
        return prefix or ""
    if prefix[-1].isspace() or suffix[0].isspace():
        return prefix + suffix
    return prefix + delimiter + suffix


def _qa_turn(question: str, answer: str | None, target_delim: str, fewshot_delim: str):
    """lm-eval's ``build_qa_turn`` (no ``gen_prefix``): the user turn, and the assistant's
    answer when there is one."""
    if answer is None:
        return [Message("user", question)]
    return [Message("user", question, target_delim), Message("assistant", answer, fewshot_delim)]


def _single_turn(messages: list[Message]) -> list[dict]:
    """lm-eval's ``multiturn_to_singleturn``: the system message, then every other turn
    as plain text in one user message (the last turn without its delimiter)."""
    system, rest = (messages[0], messages[1:]) if messages[0].role == "system" else (None, messages)
    text = "".join(m.to_text() for m in rest[:-1]) + rest[-1].content
    user = [Message("user", text).to_dict()]
    return [system.to_dict(), *user] if system else user


def _system_and_shots(
    task: Task, doc: dict, doc_id: int, prompting: Prompting, sampler: _Sampler | None
) -> list[Message]:
    """The messages before the document's own turn."""
    fs = task.spec["fewshot"]
    delim = fs.get("delimiter", "\n\n")
    tgt = fs.get("target_delimiter", task.spec["target_delimiter"])  # fewshot_config's
    system = maybe_delimit(prompting.system_instruction, _description(task, doc, doc_id), delim)
    messages = [Message("system", system)] if system else []
    for i, ex in _fewshot_examples(sampler, doc_id, doc):
        where = f"fewshot {i}"
        if task.output_type in (GENERATE, LOGLIKELIHOOD):
            question = str(_render(task.spec["doc_to_text"], ex, "doc_to_text", task, where))
            answer = _shot_answer(task, ex, where)
        else:
            text, choices, gold, cont = doc_parts(task, ex, where)
            if task.output_type == "multiple_input":  # lm-eval: an empty target is no answer
                question, answer = choices[gold], cont or None
            else:
                question, answer = text, choices[gold]
        messages += _qa_turn(question, answer, tgt, delim)
    return messages


def _prompt(messages: list[Message], prompting: Prompting, chat) -> str:
    if prompting.chat_template is False:
        return "".join(m.to_text() for m in messages)
    if chat is None:
        raise TaskError("a chat template is asked for, but no renderer was given")
    history = (
        [m.to_dict() for m in messages]
        if prompting.fewshot_as_multiturn
        else _single_turn(messages)
    )
    return chat(history, add_generation_prompt=True)


def _document_prompt(
    task: Task, doc: dict, doc_id, prompting: Prompting, chat, sampler: _Sampler | None
) -> str:
    """A document's one prompt (generate_until, loglikelihood): the system message and
    few-shot turns, then its ``doc_to_text`` as the user turn, rendered."""
    text = str(_render(task.spec["doc_to_text"], doc, "doc_to_text", task, doc_id))
    messages = [*_system_and_shots(task, doc, doc_id, prompting, sampler), Message("user", text)]
    return _prompt(messages, prompting, chat)


def _selected(task: Task, docs: list[dict], doc_ids) -> list[tuple[int, dict]]:
    ids = range(len(docs)) if doc_ids is None else doc_ids
    bad = [i for i in ids if not 0 <= i < len(docs)]
    if bad:
        raise TaskError(f"{task.path}: document ids {bad[:5]} outside the {len(docs)} documents")
    return [(int(i), docs[i]) for i in ids]


def build_requests(
    task: Task,
    docs: list[dict],
    doc_ids: list[int] | range | None = None,
    prompting: Prompting = RAW,
    chat: Callable[..., str] | None = None,
    *,
    pool: list[dict] | None = None,
) -> list[dict]:
    """One row per (doc, choice) of the documents ``doc_ids`` (default: all): the request
    and what scoring needs to know. ``docs`` are the task's evaluated documents, indexed
    by document id (a random few-shot draw depends on the documents before it);
    ``pool`` the few-shot pool when the task draws examples from a split.

    ``prompting`` says how contexts are rendered (lm-eval's ``fewshot_context``), and
    ``chat`` renders messages with the model's chat template (``chat.renderer``). With a
    chat template the continuation has no target delimiter, as lm-eval's
    ``construct_requests``: the answer follows the template's generation prompt."""
    rows = []
    delim = "" if prompting.chat_template is not False else task.spec["target_delimiter"]
    sampler = _sampler(task, docs, pool)
    for doc_id, doc in _selected(task, docs, doc_ids):
        text, choices, gold, cont = doc_parts(task, doc, doc_id)
        before = _system_and_shots(task, doc, doc_id, prompting, sampler)
        if task.output_type == "multiple_input":  # one context per choice, one continuation
            contexts = [_prompt([*before, Message("user", c)], prompting, chat) for c in choices]
            continuations = [delim + cont] * len(choices)
        else:
            contexts = [_prompt([*before, Message("user", text)], prompting, chat)] * len(choices)
            continuations = [delim + c for c in choices]
        for j, choice in enumerate(choices):
            rows.append(
                {
                    "doc_id": doc_id,
                    "choice": j,
                    "n_choices": len(choices),
                    "gold": gold,
                    "choice_chars": len(choice),
                    "context": contexts[j],
                    "continuation": continuations[j],
                }
            )
    return rows


# ------------------------------------------------------------------ generate_until
def _target(task: Task, doc: dict, doc_id):
    """lm-eval's ``doc_to_target``: a field's value, a YAML list, or a rendered template,
    ``ast.literal_eval``-ed when it looks like a list (``{{answer.aliases}}``)."""
    value = task.spec["doc_to_target"]
    out = _render(value, doc, "doc_to_target", task, doc_id)
    if isinstance(value, str) and value not in doc and isinstance(out, str):
        if len(out) >= 2 and out[0] == "[" and out[-1] == "]":
            try:
                out = ast.literal_eval(out)
            except (SyntaxError, ValueError):
                pass
    return out


def generation_targets(task: Task, doc: dict, doc_id) -> list[str]:
    """The document's targets, always a list (a single target: a list of one)."""
    t = _target(task, doc, doc_id)
    targets = [] if t is None else [str(x) for x in t] if isinstance(t, (list, tuple)) else [str(t)]
    if not targets:
        raise TaskError(f"{task.path}: doc {doc_id}: doc_to_target gave no target ({t!r})")
    return targets


def _shot_answer(task: Task, doc: dict, where: str) -> str | None:
    """A few-shot example's answer as lm-eval's ``build_qa_turn`` takes it: the target
    (a list: its first); None for no answer (``None`` or ``""``: the text alone)."""
    answer = _target(task, doc, where)
    if answer is None or answer == "":
        return None
    if isinstance(answer, (list, tuple)):
        if not answer:
            raise TaskError(f"{task.path}: doc_to_target on {where} gave an empty list")
        answer = answer[0]
    return str(answer)


def build_generation_requests(
    task: Task,
    docs: list[dict],
    doc_ids: list[int] | range | None = None,
    prompting: Prompting = RAW,
    chat: Callable[..., str] | None = None,
    *,
    pool: list[dict] | None = None,
) -> list[dict]:
    """One row per document of ``doc_ids`` (default: all; ``docs`` and ``pool`` as for
    ``build_requests``): ``doc_id``, ``context`` (lm-eval's prompt, rendered as
    ``prompting`` says), ``until`` (the task's stop strings, without EOS: the engine adds
    the tokenizer's), ``max_gen_toks``, ``targets`` (list of str), and ``doc_fields`` (JSON
    of the document fields the task's scoring reads, ``task_functions.doc_fields``) when
    it reads any."""
    if task.output_type != GENERATE:
        raise TaskError(f"{task.path}: output_type {task.output_type}, not generate_until")
    from .task_functions import doc_fields

    gen = task.generation_kwargs
    fields = doc_fields(task.spec)
    rows = []
    sampler = _sampler(task, docs, pool)
    for doc_id, doc in _selected(task, docs, doc_ids):
        targets = generation_targets(task, doc, doc_id)
        row = {
            "doc_id": int(doc_id),
            "context": _document_prompt(task, doc, doc_id, prompting, chat, sampler),
            "until": list(gen["until"]),
            "max_gen_toks": gen["max_gen_toks"],
            "targets": targets,
        }
        if fields:  # what the scorer reads from the document, kept with the prediction
            missing = [f for f in fields if f not in doc]
            if missing:
                raise TaskError(f"{task.path}: doc {doc_id} has no field(s) {missing}")
            row["doc_fields"] = json.dumps({f: doc[f] for f in fields}, sort_keys=True)
        rows.append(row)
    return rows


# ------------------------------------------------------------------ loglikelihood
def _single_target(task: Task, doc: dict, doc_id) -> str:
    t = _target(task, doc, doc_id)
    if isinstance(t, (list, tuple)) or t is None:
        raise TaskError(
            f"{task.path}: doc_to_target on doc {doc_id} gave {t!r}; output_type "
            f"{task.output_type} needs one string"
        )
    return str(t)


def build_loglikelihood_requests(
    task: Task,
    docs: list[dict],
    doc_ids: list[int] | range | None = None,
    prompting: Prompting = RAW,
    chat: Callable[..., str] | None = None,
    *,
    pool: list[dict] | None = None,
) -> list[dict]:
    """loglikelihood (lm-eval's ``construct_requests``: ``(ctx, doc_to_target(doc))``):
    one row per document in ``build_requests``' form, the target as the only "choice"
    (``choice`` 0, ``n_choices`` 1, ``gold`` 0). No target delimiter is added: the
    target carries its own (lambada_openai's ``' ' + last word``)."""
    if task.output_type != LOGLIKELIHOOD:
        raise TaskError(f"{task.path}: output_type {task.output_type}, not {LOGLIKELIHOOD}")
    rows = []
    sampler = _sampler(task, docs, pool)
    for doc_id, doc in _selected(task, docs, doc_ids):
        target = _single_target(task, doc, doc_id)
        rows.append(
            {
                "doc_id": int(doc_id),
                "choice": 0,
                "n_choices": 1,
                "gold": 0,
                "choice_chars": len(target),
                "context": _document_prompt(task, doc, doc_id, prompting, chat, sampler),
                "continuation": target,
            }
        )
    return rows


def build_rolling_requests(
    task: Task, docs: list[dict], doc_ids: list[int] | range | None = None
) -> list[dict]:
    """loglikelihood_rolling (lm-eval's ``construct_requests``: ``(doc_to_target(doc),)``):
    one row per document, ``doc_id`` and ``text``, the whole text scored. No prompt is
    built, so a chat template changes nothing (as in lm-eval)."""
    if task.output_type != ROLLING:
        raise TaskError(f"{task.path}: output_type {task.output_type}, not {ROLLING}")
    return [
        {"doc_id": int(doc_id), "text": _single_target(task, doc, doc_id)}
        for doc_id, doc in _selected(task, docs, doc_ids)
    ]
