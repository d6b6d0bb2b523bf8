"""lm-evaluation-harness' answer filters for ``output_type: generate_until``.

A task's ``filter_list`` names pipelines; each turns the generated text of every
document into the answer its metrics compare with the targets:

    filter_list:
      - name: strict-match
        filter:
          - {function: regex, regex_pattern: "The answer is (\\-?[0-9\\.\\,]+).", group_select: 0}
          - {function: take_first}

A task without ``filter_list`` gets lm-eval's single pipeline ``none`` (``take_first``).
The functions are lm-eval 0.4.13's (``lm_eval/filters/``), with their defaults:

- ``regex``: ``re.findall(regex_pattern, text)``; no match gives ``fallback``
  (``"[invalid]"``). Otherwise the match at ``group_select`` (default 0, negative counts
  from the end) is taken; a pattern with several groups gives a tuple, of which the first
  non-empty group is taken (``fallback`` when all are empty); the result is stripped.
  A non-string response counts as ``""``.
- ``take_first``: the first response of each document (lm-eval keeps a list of responses
  per document for ``repeats``; llmboard generates once).
- ``lowercase``, ``uppercase``, ``remove_whitespace`` (``str.strip``).
- ``map``: ``mapping_dict.get(answer, default_value)``.
- ``custom``: lm-eval's ``filter_fn: !function utils.x``; here ``filter_fn`` names one of
  ``task_functions.CUSTOM_FILTERS`` (``humaneval.build_predictions``), which sees the
  document's stored fields.

As in every lm-eval task, ``take_first`` ends each pipeline: a function after it would
act on the characters of the answer (lm-eval iterates the string), and without it the
metric gets a list; both are refused when the task is loaded. The one exception is
lm-eval's code tasks: a pipeline may end in ``custom`` (humaneval's ``create_test``),
and then every response of a document reaches the metric (pass@k over ``repeats``). ``map`` must give strings
(its ``mapping_dict`` values and ``default_value``): lm-eval's default ``None`` makes its
own ``exact_match`` fail on an unmapped answer.
"""

from __future__ import annotations

import re

from .errors import ScoreError

# lm-eval's RegexFilter defaults
REGEX_DEFAULTS = {
    "regex_pattern": r"#### (\-?[0-9\.\,]+)",
    "group_select": 0,
    "fallback": "[invalid]",
}
FILTER_ARGS = {
    "regex": {"regex_pattern", "group_select", "fallback"},
    "take_first": set(),
    "lowercase": set(),
    "uppercase": set(),
    "remove_whitespace": set(),
    "map": {"mapping_dict", "default_value"},
    "custom": {"filter_fn"},
}
DEFAULT_FILTER_LIST = [{"name": "none", "filter": [{"function": "take_first"}]}]


def filter_list_problems(filter_list) -> list[str]:
    """What is wrong with a ``filter_list`` (empty when nothing is); each problem names
    the pipeline and step (``filter_list[0] (strict-match) step 1 (regex): ...``)."""
    if not isinstance(filter_list, list) or not filter_list:
        return ["must be a non-empty list of {name, filter} pipelines"]
    out, names = [], set()
    for i, pipe in enumerate(filter_list):
        where = f"filter_list[{i}]"
        if not isinstance(pipe, dict) or set(pipe) != {"name", "filter"}:
            out.append(f"{where}: must have exactly the keys 'name' and 'filter'")
            continue
        name, steps = pipe["name"], pipe["filter"]
        if not isinstance(name, str) or not name or "," in name:
            out.append(f"{where}: name must be a non-empty string without ','")
            continue
        where = f"{where} ({name})"
        if name in names:
            out.append(f"{where}: name used twice")
        names.add(name)
        if not isinstance(steps, list) or not steps:
            out.append(f"{where}: filter must be a non-empty list of {{function: ...}} steps")
            continue
        for j, step in enumerate(steps):
            out += [f"{where} step {j}{p}" for p in _step_problems(step)]
        fns = [s.get("function") for s in steps if isinstance(s, dict)]
        if fns and fns[-1] not in ("take_first", "custom") or "take_first" in fns[:-1]:
            out.append(
                f"{where}: take_first must be the last step, and only the last "
                "(a step after it would act on the answer's characters, as in lm-eval); "
                "a code task's pipeline may end in custom instead"
            )
    return out


def _step_problems(step) -> list[str]:
    if not isinstance(step, dict) or "function" not in step:
        return [": must be a mapping with a 'function'"]
    fn = step["function"]
    if fn not in FILTER_ARGS:
        return [f": unknown filter function {fn!r}; known: {sorted(FILTER_ARGS)}"]
    where = f" ({fn})"
    extra = set(step) - {"function"} - FILTER_ARGS[fn]
    if extra:
        return [f"{where}: unknown argument(s) {sorted(extra)}; known: {sorted(FILTER_ARGS[fn])}"]
    out = []
    if fn == "regex":
        pattern = step.get("regex_pattern", REGEX_DEFAULTS["regex_pattern"])
        if not isinstance(pattern, str):
            out.append(f"{where}: regex_pattern must be a string")
        else:
            try:
                re.compile(pattern)
            except re.error as e:
                out.append(f"{where}: regex_pattern {pattern!r} does not compile: {e}")
        group = step.get("group_select", 0)
        if not isinstance(group, int) or isinstance(group, bool):
            out.append(f"{where}: group_select must be an integer, got {group!r}")
        if not isinstance(step.get("fallback", ""), str):
            out.append(f"{where}: fallback must be a string")
    elif fn == "custom":
        from .task_functions import CUSTOM_FILTERS

        if step.get("filter_fn") not in CUSTOM_FILTERS:
            out.append(
                f"{where}: filter_fn {step.get('filter_fn')!r} is not one of llmboard's "
                f"functions {sorted(CUSTOM_FILTERS)} (a task file cannot bring code)"
            )
    elif fn == "map":
        mapping = step.get("mapping_dict", {})
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
        ):
            out.append(f"{where}: mapping_dict must map strings to strings")
        if not isinstance(step.get("default_value"), str):
            out.append(
                f"{where}: default_value must be a string (lm-eval's default, None, "
                "makes its exact_match fail on an unmapped answer)"
            )
    return out


# ------------------------------------------------------------------ the functions
# Each takes and returns lm-eval's shape: one entry per document, a list of responses
# before take_first, the answer after it.
def _regex(
    resps, regex_pattern=REGEX_DEFAULTS["regex_pattern"], group_select=0, fallback="[invalid]"
):
    regex = re.compile(regex_pattern)

    def filter_set(inst):
        filtered = []
        for resp in inst:
            if not isinstance(resp, str):
                resp = ""
            match = regex.findall(resp)
            if match:
                try:
                    match = match[group_select]
                except IndexError:  # lm-eval raises here too
                    raise ScoreError(
                        f"regex {regex_pattern!r}: group_select {group_select} but only "
                        f"{len(match)} match(es) in {resp!r}"
                    ) from None
                if isinstance(match, tuple):
                    match = [m for m in match if m]
                    match = match[0] if match else fallback
                match = match.strip()
            else:
                match = fallback
            filtered.append(match)
        return filtered

    return [filter_set(x) for x in resps]


def _map(resps, mapping_dict=None, default_value=None):
    mapping = mapping_dict or {}
    return [[mapping.get(r, default_value) for r in inst] for inst in resps]


def _custom(resps, filter_fn: str, docs: list[dict] | None):
    from .task_functions import CUSTOM_FILTERS

    if docs is None or len(docs) != len(resps):
        raise ScoreError(
            f"custom filter {filter_fn}: the predictions do not hold the documents' fields "
            "(doc_fields); rerun inference for this task"
        )
    return CUSTOM_FILTERS[filter_fn].fn(resps, docs)


FUNCTIONS = {
    "regex": _regex,
    "take_first": lambda resps: [r[0] for r in resps],
    "lowercase": lambda resps: [[r.lower() for r in inst] for inst in resps],
    "uppercase": lambda resps: [[r.upper() for r in inst] for inst in resps],
    "remove_whitespace": lambda resps: [[r.strip() for r in inst] for inst in resps],
    "map": _map,
}


def apply_filters(
    filter_list, generations: list[str], docs: list[dict] | None = None
) -> dict[str, list]:
    """filter name -> the answer of each document, in the order of ``generations`` (a
    document's generation, or the list of its repeats) and of ``filter_list`` (None:
    lm-eval's ``none``); ``docs``
    the documents' stored fields, for ``custom`` steps. An answer is a string, or the list
    of a document's programs when the pipeline ends in ``custom``."""
    filter_list = DEFAULT_FILTER_LIST if filter_list is None else filter_list
    problems = filter_list_problems(filter_list)
    if problems:
        raise ScoreError("filter_list: " + "; ".join(problems))
    out = {}
    for pipe in filter_list:
        # each document's responses: one generation, or its repeats (a list)
        resps = [list(g) if isinstance(g, list) else [g] for g in generations]
        for step in pipe["filter"]:
            if step["function"] == "custom":
                resps = _custom(resps, step["filter_fn"], docs)
                continue
            kwargs = {k: v for k, v in step.items() if k != "function"}
            resps = FUNCTIONS[step["function"]](resps, **kwargs)
        out[pipe["name"]] = list(resps)
    return out
