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
# what a generate_until task's metric_list may name, with the options lm-eval passes on
GENERATION_METRICS = {
    "exact_match": {"ignore_case", "ignore_punctuation", "ignore_numbers", "regexes_to_ignore"}
}
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


def metric_names(spec: dict) -> list[str]:
    """lm-eval's score names of a generate_until task: ``{metric},{filter}``, filter-major
    (``exact_match,strict-match``, ``exact_match,flexible-extract``)."""
    from .filters import DEFAULT_FILTER_LIST

    return [
        f"{m['metric']},{f['name']}"
        for f in spec.get("filter_list") or DEFAULT_FILTER_LIST
        for m in spec.get("metric_list") or DEFAULT_METRIC_LIST
    ]


def per_doc_generation_metrics(predictions, task_spec: dict) -> dict:
    """From a polars frame of generation predictions (one row per document: ``doc_id``,
    ``generation``, ``targets``) and the task's resolved definition: per document, the
    answer of each filter and each score (0/1).

    Returns ``{"doc_id": [...], "generation": [...], "targets": [[...]],
    "answers": {filter: [...]}, "metrics": {"exact_match,<filter>": [...]}}``, in doc_id
    order."""
    from .filters import DEFAULT_FILTER_LIST, apply_filters

    df = predictions.sort("doc_id")
    ids = df["doc_id"].to_list()
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ScoreError(f"doc {dup}: more than one generation")
    generations = df["generation"].to_list()
    targets = df["targets"].to_list()
    for i, g, t in zip(ids, generations, targets):
        if g is None:
            raise ScoreError(f"doc {i}: no generation (null)")
        if not t:
            raise ScoreError(f"doc {i}: no target")
    filter_list = task_spec.get("filter_list") or DEFAULT_FILTER_LIST
    metric_list = task_spec.get("metric_list") or DEFAULT_METRIC_LIST
    answers = apply_filters(filter_list, generations)
    metrics = {
        f"{m['metric']},{name}": [doc_score(m, a, t) for a, t in zip(answers[name], targets)]
        for name in answers
        for m in metric_list
    }
    return {
        "doc_id": ids,
        "generation": generations,
        "targets": targets,
        "answers": answers,
        "metrics": metrics,
    }
