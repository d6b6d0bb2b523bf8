r"""Metrics as lm-evaluation-harness computes them.

acc: argmax of the log-likelihoods equals the gold index (ties: first choice).
acc_norm: the same on loglikelihood / len(choice in characters).
exact_match (generate_until): lm-eval's ``exact_match_hf_evaluate`` on each filtered
answer; a document with several targets (TriviaQA's aliases) counts as correct when
any target matches, as lm-eval's ``process_results`` does.
stderr: sample standard deviation / sqrt(n). Groups (MMLU): the mean of member
scores weighted by their sizes, with lm-eval's pooled stderr.

loglikelihood (lambada_openai): ``perplexity`` is lm-eval's aggregation
``exp(-mean(ll))`` over documents, ``acc`` the mean of is_greedy.
loglikelihood_rolling: ``word_perplexity`` and ``byte_perplexity`` are lm-eval's
``weighted_perplexity``, ``exp(-sum(ll) / sum(weight))``, ``bits_per_byte``
``-sum(ll) / sum(bytes) / ln 2``, the weights counted as lm-eval's ``count_words``
(``len(re.split(r"\s+", text))``) and ``count_bytes`` (UTF-8 bytes) of the scored text.
Their standard errors are not lm-eval's (it reports none for the weighted ones and a
100,000-draw bootstrap for ``perplexity``): the delta method, ``aggregate`` says how.
"""

from __future__ import annotations

import math
import re
import string

from .errors import ScoreError

# what per_doc_metrics computes, and so what a multiple-choice task may ask for
KNOWN_METRICS = frozenset({"acc", "acc_norm"})
# the metrics that are not a mean of per-document values: lm-eval's aggregation of each
# (lm_eval/api/metrics.py); all of them are lower-is-better (higher_is_better: false)
AGGREGATIONS = {
    "perplexity": "perplexity",
    "word_perplexity": "weighted_perplexity",
    "byte_perplexity": "weighted_perplexity",
    "bits_per_byte": "bits_per_byte",
}
LOWER_IS_BETTER = frozenset(AGGREGATIONS)
# what a generate_until task's metric_list may name, with the options lm-eval passes on;
# math_verify comes only from process_results (task_functions), pass_at_k and pass_at_1
# are lm-eval's code metrics (HF evaluate's code_eval: the program is run)
GENERATION_METRICS = {
    "exact_match": {"ignore_case", "ignore_punctuation", "ignore_numbers", "regexes_to_ignore"},
    "math_verify": set(),
    "pass_at_k": {"k"},
    "pass_at_1": set(),
}
CODE_METRICS = frozenset({"pass_at_k", "pass_at_1"})
# metric_list keys lm-eval does not pass to the metric function
METRIC_LIST_KEYS = {"metric", "aggregation", "higher_is_better"}
DEFAULT_METRIC_LIST = [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}]


def mean_stderr(values: list[float]) -> float:
    n = len(values)
    if n < 2:
        return float("nan")
    mu = sum(values) / n
    return math.sqrt(sum((x - mu) ** 2 for x in values) / (n - 1)) / math.sqrt(n)


def per_doc_metrics(predictions) -> dict[str, list[float]]:
    """From a polars frame of prediction rows: per document acc and acc_norm (0/1)."""
    import numpy as np
    import polars as pl

    df = predictions.sort(["doc_id", "choice"])
    docs = df.group_by("doc_id", maintain_order=True).agg(
        pl.col("loglikelihood"),
        pl.col("choice_chars"),
        pl.col("gold").first(),
        pl.col("n_choices").first(),
        pl.len().alias("rows"),
    )
    bad = docs.filter(pl.col("rows") != pl.col("n_choices"))
    if bad.height:
        raise ScoreError(
            f"doc {bad['doc_id'][0]}: {bad['rows'][0]} predictions for "
            f"{bad['n_choices'][0]} choices"
        )
    acc, acc_norm = [], []
    for lls, chars, gold in zip(docs["loglikelihood"], docs["choice_chars"], docs["gold"]):
        lls = np.asarray(lls, dtype=np.float64)
        chars = np.asarray(chars, dtype=np.float64)
        acc.append(float(int(np.argmax(lls)) == gold))
        acc_norm.append(float(int(np.argmax(lls / chars)) == gold))
    return {"doc_id": docs["doc_id"].to_list(), "acc": acc, "acc_norm": acc_norm}


def _one_row_per_doc(df) -> None:
    ids = df["doc_id"].to_list()
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ScoreError(f"doc {dup}: more than one prediction row")


def per_doc_loglikelihood_metrics(predictions) -> dict[str, list]:
    """loglikelihood (one row per document): per document the log-likelihood (what
    ``perplexity`` aggregates, as lm-eval's ``process_results`` passes it on) and acc
    (is_greedy, 0/1)."""
    df = predictions.sort("doc_id")
    _one_row_per_doc(df)
    return {
        "doc_id": df["doc_id"].to_list(),
        "perplexity": [float(x) for x in df["loglikelihood"]],
        "acc": [float(bool(g)) for g in df["is_greedy"]],
    }


def count_words(text: str) -> int:
    r"""lm-eval's ``Task.count_words`` (and wikitext's): ``len(re.split(r"\s+", text))``."""
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    """lm-eval's ``Task.count_bytes``: UTF-8 bytes."""
    return len(text.encode("utf-8"))


def per_doc_rolling_metrics(predictions) -> dict[str, list]:
    """loglikelihood_rolling (one row per document: ``text``, ``loglikelihood``): per
    document the (log-likelihood, weight) pairs lm-eval's ``process_results`` gives:
    words for word_perplexity, UTF-8 bytes for byte_perplexity and bits_per_byte."""
    df = predictions.sort("doc_id")
    _one_row_per_doc(df)
    lls = [float(x) for x in df["loglikelihood"]]
    texts = df["text"].to_list()
    words = [count_words(t) for t in texts]
    nbytes = [count_bytes(t) for t in texts]
    return {
        "doc_id": df["doc_id"].to_list(),
        "word_perplexity": list(zip(lls, words)),
        "byte_perplexity": list(zip(lls, nbytes)),
        "bits_per_byte": list(zip(lls, nbytes)),
    }


def _ratio_stderr(items: list[tuple[float, float]], ratio: float) -> float:
    """Delta-method standard error of the ratio estimator sum(ll) / sum(w) over documents:
    sqrt(sum((ll_i - ratio w_i)^2) / (n (n - 1))) / mean(w)."""
    n = len(items)
    if n < 2:
        return float("nan")
    w_mean = sum(w for _, w in items) / n
    resid = sum((ll - ratio * w) ** 2 for ll, w in items)
    return math.sqrt(resid / (n * (n - 1))) / w_mean


def aggregate(metric: str, items: list) -> tuple[float, float]:
    """(value, stderr) of a metric over its per-document items. A mean metric: the mean
    and sample sd / sqrt(n). The others, lm-eval's aggregation (``AGGREGATIONS``) and a
    delta-method stderr: ``perplexity`` = exp(-m), m the mean log-likelihood, stderr
    exp(-m) x se(m); ``weighted_perplexity`` = exp(-R), R = sum(ll) / sum(w), stderr
    exp(-R) x se(R) (``_ratio_stderr``); ``bits_per_byte`` = -R / ln 2, stderr
    se(R) / ln 2."""
    kind = AGGREGATIONS.get(metric, "mean")
    if not items:
        raise ScoreError(f"{metric}: no documents")
    if kind == "mean":
        return sum(items) / len(items), mean_stderr(items)
    if kind == "perplexity":
        m = sum(items) / len(items)  # lm-eval's mean
        value = math.exp(-m)
        return value, value * mean_stderr(items)
    total_w = sum(w for _, w in items)
    if total_w == 0:
        raise ScoreError(f"{metric}: the documents hold no words or bytes")
    ratio = sum(ll for ll, _ in items) / total_w  # lm-eval's weighted_mean
    se = _ratio_stderr(items, ratio)
    if kind == "weighted_perplexity":
        value = math.exp(-ratio)
        return value, value * se
    return -ratio / math.log(2), se / math.log(2)


def pooled_stderr(stderr, n):
    """lm-eval's ``pooled_sample_stderr`` for a size-weighted group mean, as a polars
    expression over member rows (``stderr`` and ``n`` are column expressions):
    sqrt(sum((n_i - 1) * se_i^2 * n_i) / (N - k) / N), N = sum n_i, k members."""
    import polars as pl

    return (((n - 1) * stderr**2 * n).sum() / (n.sum() - pl.len()) / n.sum()).sqrt()


# ------------------------------------------------------------------ generate_until
def metric_list_problems(metric_list) -> list[str]:
    """What is wrong with a generate_until task's ``metric_list`` (empty when nothing)."""
    if not isinstance(metric_list, list) or not metric_list:
        return ["must be a non-empty list of {metric: ...} entries"]
    out, seen = [], set()
    for i, m in enumerate(metric_list):
        where = f"metric_list[{i}]"
        if not isinstance(m, dict) or "metric" not in m:
            out.append(f"{where}: must be a mapping with a 'metric'")
            continue
        name = m["metric"]
        if name not in GENERATION_METRICS:
            out.append(f"{where}: unknown metric {name!r}; known: {sorted(GENERATION_METRICS)}")
            continue
        where = f"{where} ({name})"
        if name in seen:
            out.append(f"{where}: named twice")
        seen.add(name)
        extra = set(m) - METRIC_LIST_KEYS - GENERATION_METRICS[name]
        if extra:
            out.append(
                f"{where}: unknown option(s) {sorted(extra)}; known: "
                f"{sorted(METRIC_LIST_KEYS | GENERATION_METRICS[name])}"
            )
        if name == "pass_at_k":
            k = m.get("k")
            ks = [k] if isinstance(k, int) else k
            if (
                not isinstance(ks, list)
                or not ks
                or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in ks)
            ):
                out.append(f"{where}: k must be a positive integer or a list of them, got {k!r}")
        if m.get("aggregation", "mean") != "mean":
            out.append(f"{where}: aggregation must be mean, got {m['aggregation']!r}")
        for flag in ("ignore_case", "ignore_punctuation", "ignore_numbers", "higher_is_better"):
            if flag in m and not isinstance(m[flag], bool):
                out.append(f"{where}: {flag} must be true or false, got {m[flag]!r}")
        regexes = m.get("regexes_to_ignore")
        if regexes is not None:
            if not isinstance(regexes, list) or not all(isinstance(r, str) for r in regexes):
                out.append(f"{where}: regexes_to_ignore must be a list of strings")
                continue
            for r in regexes:
                try:
                    re.compile(r)
                except re.error as e:
                    out.append(f"{where}: regexes_to_ignore {r!r} does not compile: {e}")
    return out


# Ported from lm_eval/api/metrics.py (0.4.13), itself ported from Hugging Face evaluate's
# exact_match (Apache License 2.0). numpy's fixed-width strings are kept on purpose:
# they decide the result in the same corner cases (trailing NULs) as in lm-eval.
def exact_match_hf_evaluate(
    predictions,
    references,
    regexes_to_ignore=None,
    ignore_case=False,
    ignore_punctuation=False,
    ignore_numbers=False,
):
    import numpy as np

    if regexes_to_ignore is not None:
        for s in regexes_to_ignore:
            predictions = np.array([re.sub(s, "", x) for x in predictions])
            references = np.array([re.sub(s, "", x) for x in references])
    else:
        predictions = np.asarray(predictions)
        references = np.asarray(references)

    if ignore_case:
        predictions = np.char.lower(predictions)
        references = np.char.lower(references)

    if ignore_punctuation:
        repl_table = string.punctuation.maketrans("", "", string.punctuation)
        predictions = np.char.translate(predictions, table=repl_table)
        references = np.char.translate(references, table=repl_table)

    if ignore_numbers:
        repl_table = string.digits.maketrans("", "", string.digits)
        predictions = np.char.translate(predictions, table=repl_table)
        references = np.char.translate(references, table=repl_table)

    score_list = predictions == references

    return {"exact_match": np.mean(score_list)}


def doc_score(metric: dict, answer: str, targets: list[str]) -> float:
    """One document's score (0 or 1) for one ``metric_list`` entry, as lm-eval's
    ``process_results`` gives it: the answer against all targets at once, correct when
    any matches (with one target, the same as lm-eval's single-target path)."""
    kwargs = {k: v for k, v in metric.items() if k not in METRIC_LIST_KEYS}
    value = exact_match_hf_evaluate(
        references=list(targets), predictions=[answer] * len(targets), **kwargs
    )["exact_match"]
    return 1.0 if value > 0.0 else 0.0


def metric_keys(m: dict) -> list[str]:
    """The scores one metric_list entry gives, as lm-eval names them: its metric, or for
    ``pass_at_k`` one ``pass@k`` per k (code_eval returns a dict, lm-eval keeps its keys)."""
    if m["metric"] == "pass_at_k":
        k = m.get("k")
        return [f"pass@{x}" for x in ([k] if isinstance(k, int) else k)]
    return [m["metric"]]


def metric_names(spec: dict) -> list[str]:
    """lm-eval's score names of a generate_until task: ``{metric},{filter}``, filter-major
    (``exact_match,strict-match``, ``exact_match,flexible-extract``, ``pass@1,create_test``)."""
    from .filters import DEFAULT_FILTER_LIST

    return [
        f"{key},{f['name']}"
        for f in spec.get("filter_list") or DEFAULT_FILTER_LIST
        for m in spec.get("metric_list") or DEFAULT_METRIC_LIST
        for key in metric_keys(m)
    ]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al. (2021)'s unbiased pass@k from n samples of which c pass, as HF
    evaluate's code_eval estimates it: 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def _stored_fields(df) -> list[dict] | None:
    import json

    if "doc_fields" not in df.columns:
        return None
    return [json.loads(x) if x else {} for x in df["doc_fields"]]


def _math_scores(answers: list, fields: list[dict] | None, recorded: list | None) -> list[dict]:
    """minerva_math's process_results on each document's answer: checked now, or taken
    from ``recorded`` (a score's details) after checking that they are of these answers."""
    from .math_answers import check_documents, get_unnormalized_answer, normalize_final_answer

    if fields is None:
        raise ScoreError("process_results minerva_math: the predictions hold no doc_fields")
    if recorded is not None:
        for i, (a, r) in enumerate(zip(answers, recorded)):
            if r.get("answer") != normalize_final_answer(get_unnormalized_answer(a)):
                raise ScoreError(f"document {i}: recorded answer differs from the generation's")
        return recorded
    return check_documents([(a, f["solution"], f["answer"]) for a, f in zip(answers, fields)])


def _code_scores(
    answers: list, targets: list[list[str]], code: dict | None, recorded: list | None
) -> list[dict]:
    """Each document's programs (candidate + "\n" + test, as code_eval builds them) run
    in the sandbox now, or their recorded outcomes (checked to be of these programs)."""
    from .code_execution import program_sha256, run_code

    programs = [
        [c + "\n" + t[0] for c in ([a] if isinstance(a, str) else list(a))]
        for a, t in zip(answers, targets)
    ]
    if recorded is not None:
        for i, (progs, r) in enumerate(zip(programs, recorded)):
            if [program_sha256(p) for p in progs] != [o["sha256"] for o in r["programs"]]:
                raise ScoreError(f"document {i}: recorded programs differ from the predictions'")
        return recorded
    if code is None:
        raise ScoreError(
            "this task runs model-generated code to score it, and the config does not allow "
            "it: set allow_code_execution: true"
        )
    return run_code(programs, code)


def _doc_values(m: dict, answers: list, targets, details: list[dict] | None) -> dict:
    """metric key -> per-document values of one metric_list entry on one filter."""
    name = m["metric"]
    if name in ("exact_match", "math_verify") and details is not None and "answer" in details[0]:
        return {name: [d[name] for d in details]}
    if name in CODE_METRICS:
        out = {}
        for key in metric_keys(m):
            k = 1 if key == "pass_at_1" else int(key.split("@")[1])
            vals = []
            for d in details:
                n = len(d["programs"])
                c = sum(o["status"] == "passed" for o in d["programs"])
                if n < k:
                    raise ScoreError(f"{key}: {n} sample(s) per document, fewer than k={k}")
                vals.append(pass_at_k(n, c, k))
            out[key] = vals
        return out
    return {name: [doc_score(m, a, t) for a, t in zip(answers, targets)]}


def _per_document(predictions, task_spec: dict):
    """(one row per document, each document's generations in repeat order): a sampling
    task's files hold one row per (document, repeat), the others one per document."""
    import polars as pl

    repeats = int(task_spec.get("repeats", 1))
    if "repeat" not in predictions.columns or predictions["repeat"].null_count():
        df = predictions.sort("doc_id")
        ids = df["doc_id"].to_list()
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ScoreError(f"doc {dup}: more than one generation")
        if repeats != 1:
            raise ScoreError(f"the task has repeats: {repeats}, the predictions one per document")
        samples = [[g] for g in df["generation"]]
    else:
        rows = predictions.sort("doc_id", "repeat")
        df = rows.group_by("doc_id", maintain_order=True).agg(
            pl.col("repeat"), pl.col("generation"), pl.all().exclude("repeat", "generation").first()
        )
        for i, reps in zip(df["doc_id"], df["repeat"]):
            if list(reps) != list(range(repeats)):
                raise ScoreError(f"doc {i}: repeats {list(reps)}, the task has {repeats}")
        samples = [list(g) for g in df["generation"]]
    for i, gens in zip(df["doc_id"], samples):
        if any(g is None for g in gens):
            raise ScoreError(f"doc {i}: no generation (null)")
    return df, samples


def per_doc_generation_metrics(
    predictions, task_spec: dict, *, code: dict | None = None, recorded: dict | None = None
) -> dict:
    """From a polars frame of generation predictions (one row per document: ``doc_id``,
    ``generation``, ``targets``, and ``doc_fields`` where the scoring reads the document)
    and the task's resolved definition: per document, the answer of each filter, each
    score, and what decided it (``details``: a math answer's checks, each program's
    outcome).

    ``code``: the sandbox's settings when the config allows code execution (None: a code
    task is an error); ``recorded``: a score's ``details`` to reuse instead of running
    checks and programs again (verify, the report).

    Returns ``{"doc_id": [...], "generation": [...], "targets": [[...]],
    "answers": {filter: [...]}, "metrics": {"exact_match,<filter>": [...]},
    "details": {filter: [...]}}``, in doc_id order."""
    from .filters import DEFAULT_FILTER_LIST, apply_filters

    df, samples = _per_document(predictions, task_spec)
    ids = df["doc_id"].to_list()
    generations = [s[0] for s in samples]
    targets = df["targets"].to_list()
    for i, t in zip(ids, targets):
        if not t:
            raise ScoreError(f"doc {i}: no target")
    fields = _stored_fields(df)
    filter_list = task_spec.get("filter_list") or DEFAULT_FILTER_LIST
    metric_list = task_spec.get("metric_list") or DEFAULT_METRIC_LIST
    answers = apply_filters(filter_list, samples, fields)
    metrics, details = {}, {}
    for name, filtered in answers.items():
        before = (recorded or {}).get(name)
        if task_spec.get("process_results") == "minerva_math":
            details[name] = _math_scores(filtered, fields, before)
        elif any(m["metric"] in CODE_METRICS for m in metric_list):
            details[name] = _code_scores(filtered, targets, code, before)
        for m in metric_list:
            for key, vals in _doc_values(m, filtered, targets, details.get(name)).items():
                metrics[f"{key},{name}"] = vals
    return {
        "doc_id": ids,
        "generation": generations,
        "targets": targets,
        "answers": answers,
        "metrics": metrics,
        "details": details,
    }
