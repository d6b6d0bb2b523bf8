"""generate_until tasks (#12): lm-eval 0.4.13 is the oracle for prompts, stop strings,
targets, answer filters, exact_match and process_results, on the same documents.

No model: the generations scored here are written by hand (realistic answers, wrong
answers, no number, several numbers, aliases in other case and punctuation).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import math
import random
from pathlib import Path

import polars as pl
import pytest
import yaml

from llmboard.tasks.definitions import find_task_files, is_group, load_task
from llmboard.tasks.documents import fewshot_pool, load_docs
from llmboard.tasks.errors import ScoreError, TaskError
from llmboard.tasks.filters import apply_filters
from llmboard.tasks.metrics import exact_match_hf_evaluate, per_doc_generation_metrics
from llmboard.tasks.prompts import build_generation_requests, build_requests
from llmboard.tasks.scoring import SCORING_MODULES, compute_score
from lmeval_oracle import ORACLE, lmeval_generation_task

from conftest import REPO

TASKS = REPO / "tasks"
LMEVAL_TASKS = Path(importlib.util.find_spec("lm_eval").submodule_search_locations[0]) / "tasks"
EOS = "<|endoftext|>"

logging.getLogger("lm_eval").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def lmeval(tmp_path_factory):
    """name -> (task, docs, lm-eval's task), built once per module."""
    root, built = tmp_path_factory.mktemp("lmeval"), {}

    def get(name: str):
        if name not in built:
            built[name] = lmeval_generation_task(name, root)
        return built[name]

    return get


@pytest.mark.parametrize("name", list(ORACLE))
def test_requests_equal_lmevals(name, lmeval):
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

    task, docs, lt = lmeval(name)
    n = ORACLE[name][2]
    assert len(docs) == n
    ours = build_generation_requests(task, docs, list(range(n)))
    theirs = sorted(lt.instances, key=lambda i: i.doc_id)
    assert [i.doc_id for i in theirs] == [r["doc_id"] for r in ours] == list(range(n))
    for inst, r, doc in zip(theirs, ours, docs):
        ctx, gen_kwargs = inst.args
        assert r["context"] == ctx  # byte-identical prompt, few-shot examples included
        # lm-eval's HFLM: normalised kwargs, the tokenizer's EOS appended to `until`
        kw = normalize_gen_kwargs(gen_kwargs, 256)
        assert handle_stop_sequences(kw["until"], eos=EOS) == r["until"] + [EOS]
        assert r["max_gen_toks"] == kw["max_gen_toks"] == 256 and kw["do_sample"] is False
        target = lt.doc_to_target(doc)
        assert r["targets"] == (target if isinstance(target, list) else [target])
    if name == "gsm8k_cot":
        assert ours[0]["context"].count("\nA: ") == 8 and ours[0]["targets"] == ["18"]
    else:
        assert lt.multiple_target and all(len(r["targets"]) >= 1 for r in ours)


def test_task_properties():
    gsm = load_task(TASKS / "gsm8k_cot.yaml")
    assert gsm.output_type == "generate_until"
    assert gsm.metrics == ["exact_match,strict-match", "exact_match,flexible-extract"]
    assert gsm.primary_metric == "exact_match,strict-match"
    assert gsm.generation_kwargs == {"until": ["Q:", "</s>", "<|im_end|>"], "max_gen_toks": 256}
    for name in ("triviaqa", "nq_open"):
        t = load_task(TASKS / f"{name}.yaml")
        assert t.metrics == [t.primary_metric] == ["exact_match,remove_whitespace"]
        assert t.generation_kwargs == {"until": ["\n", ".", ","], "max_gen_toks": 256}
    assert set(find_task_files(TASKS)) >= {"gsm8k_cot", "triviaqa", "nq_open"}


def test_yaml_values_are_lmevals():
    """Every value that decides a number is lm-eval's, read from its own YAML."""
    for name, (rel, _, _) in ORACLE.items():
        ref = yaml.safe_load((LMEVAL_TASKS / rel).read_text())
        ours = yaml.safe_load((TASKS / f"{name}.yaml").read_text())
        for key in ("doc_to_text", "doc_to_target", "filter_list", "metric_list", "description"):
            assert ours.get(key) == ref.get(key), (name, key)
        assert ours["generation_kwargs"]["until"] == ref["generation_kwargs"]["until"]
        assert ours.get("target_delimiter", " ") == ref.get("target_delimiter", " ")
        assert ours.get("fewshot_delimiter") == ref.get("fewshot_delimiter")
        assert ours.get("num_fewshot") == ref.get("num_fewshot")
    gsm = yaml.safe_load((LMEVAL_TASKS / ORACLE["gsm8k_cot"][0]).read_text())
    ours = yaml.safe_load((TASKS / "gsm8k_cot.yaml").read_text())
    assert ours["fewshot_config"] == gsm["fewshot_config"]  # the 8 exemplars, first_n


def test_gsm8k_documents_are_the_test_split_in_order():
    docs = load_docs(load_task(TASKS / "gsm8k_cot.yaml"))
    assert len(docs) == 1319 and len({d["question"] for d in docs}) == 1319
    assert docs[0]["question"].startswith("Janet’s ducks lay 16 eggs per day.")
    assert docs[0]["answer"].endswith("#### 18")
    assert docs[-1]["question"].startswith("Henry and 3 of his friends order 7 pizzas")
    assert all(set(d) == {"question", "answer"} and "\n#### " in d["answer"] for d in docs)


def test_fewshot_overrides_and_spellings(tmp_path):
    base = load_task(TASKS / "gsm8k_cot.yaml", {"limit": 2})
    a = load_task(TASKS / "gsm8k_cot.yaml", {"limit": 2, "fewshot": {"n": 2}})
    b = load_task(TASKS / "gsm8k_cot.yaml", {"limit": 2, "num_fewshot": 2})
    assert a.hash == b.hash != base.hash
    assert a.spec["fewshot"]["sampler"] == "first_n" and len(a.spec["fewshot"]["samples"]) == 8
    ctx = build_generation_requests(a, load_docs(a), [0, 1])[0]["context"]
    assert ctx.count("\nA: ") == 2 and ctx.startswith("Q: There are 15 trees")
    longer = load_task(TASKS / "gsm8k_cot.yaml", {"generation_kwargs": {"max_gen_toks": 512}})
    assert longer.generation_kwargs["max_gen_toks"] == 512
    assert longer.generation_kwargs["until"] == base.generation_kwargs["until"]
    # lm-eval's spellings and llmboard's resolve to one definition, one hash
    src = (TASKS / "nq_open.yaml").read_text()
    (tmp_path / "nq_open.yaml").write_text(
        src.replace('fewshot_delimiter: "\\n"\n', "").replace(
            "fewshot_config: {split: train}",
            'fewshot: {n: 0, split: train, sampler: random, delimiter: "\\n"}',
        )
    )
    assert load_task(tmp_path / "nq_open.yaml").hash == load_task(TASKS / "nq_open.yaml").hash
    # no `until`: lm-eval stops at the fewshot_delimiter
    (tmp_path / "d.jsonl").write_text('{"q": "1+1", "a": "2"}\n')
    (tmp_path / "g.yaml").write_text(
        'task: g\ndataset: {source: d.jsonl}\noutput_type: generate_until\ndoc_to_text: "{{q}}="\n'
        'doc_to_target: a\nfewshot_delimiter: "\\n##\\n"\n'
    )
    g = load_task(tmp_path / "g.yaml")
    assert g.generation_kwargs == {"until": ["\n##\n"], "max_gen_toks": 256}
    assert g.metrics == ["exact_match,none"] and g.primary_metric == "exact_match,none"
    assert build_generation_requests(g, load_docs(g), [0])[0]["targets"] == ["2"]


# ----------------------------------------------------------------- filters and exact_match
GENERATIONS = [
    " The answer is 42.",
    " Natalia sold 48/2 = 24 clips in May. 48+24 = 72. The answer is 72.\n\n",
    " $1,234",
    " She pays $1,234.50 in total. The answer is $1,234.50.",
    " I do not know.",
    " First 12, then 7 and finally 19",
    " The answer is -5.",
    " -5",
    " The answer is 7",  # strict-match wants one more character after the number
    "The answer is 3.5.The answer is 4.",
    "",
    "   the Beatles  ",
    " Sunset Blvd.",
    " WEST SUNSET BOULEVARD!",
    " 1,000,000 dollars",
    " .5 and 0.25",
]
PIPELINES = [
    # gsm8k_cot's two, triviaqa/nq_open's, and the other functions with their options
    yaml.safe_load((TASKS / "gsm8k_cot.yaml").read_text())["filter_list"][0],
    yaml.safe_load((TASKS / "gsm8k_cot.yaml").read_text())["filter_list"][1],
    yaml.safe_load((TASKS / "triviaqa.yaml").read_text())["filter_list"][0],
    {"name": "none", "filter": [{"function": "take_first"}]},
    {
        "name": "lower",
        "filter": [
            {"function": "regex", "regex_pattern": r"(\w+)\s*$", "fallback": "NOPE"},
            {"function": "lowercase"},
            {"function": "take_first"},
        ],
    },
    {"name": "upper", "filter": [{"function": "uppercase"}, {"function": "take_first"}]},
    {
        "name": "default-regex",  # lm-eval's default pattern: "#### (number)"
        "filter": [{"function": "regex"}, {"function": "take_first"}],
    },
    {
        "name": "all-groups-empty",  # a tuple of empty groups: the fallback, stripped
        "filter": [
            {"function": "regex", "regex_pattern": "(x)?(y)?", "fallback": "  [none] "},
            {"function": "take_first"},
        ],
    },
    {
        "name": "second",
        "filter": [
            {"function": "regex", "regex_pattern": r"(-?\d+)|(\$\d+)", "group_select": 0},
            {"function": "remove_whitespace"},
            {"function": "take_first"},
        ],
    },
    {
        "name": "mapped",
        "filter": [
            {"function": "remove_whitespace"},
            {
                "function": "map",
                "mapping_dict": {"-5": "minus five", "$1,234": "big"},
                "default_value": "other",
            },
            {"function": "take_first"},
        ],
    },
]


def lmeval_filtered(pipeline: dict, generations: list[str]) -> list:
    """lm-eval's FilterEnsemble on one Instance per generation."""
    from lm_eval.api.instance import Instance
    from lm_eval.filters import build_filter_ensemble

    ens = build_filter_ensemble(
        pipeline["name"],
        [
            [s["function"], {k: v for k, v in s.items() if k != "function"}]
            for s in pipeline["filter"]
        ],
    )
    insts = []
    for i, g in enumerate(generations):
        inst = Instance("generate_until", {}, ("", {}), 0, ("t", i, 1))
        inst.resps = [g]
        insts.append(inst)
    ens.apply(insts)
    return [inst.filtered_resps[pipeline["name"]] for inst in insts]


def test_filters_equal_lmevals():
    ours = apply_filters(PIPELINES, GENERATIONS)
    assert list(ours) == [p["name"] for p in PIPELINES]
    for p in PIPELINES:
        assert ours[p["name"]] == lmeval_filtered(p, GENERATIONS), p["name"]
    assert ours["strict-match"][:3] == ["42", "72", "[invalid]"]
    assert ours["flexible-extract"][2] == "$1,234" and ours["all-groups-empty"][0] == "[none]"
    assert apply_filters(None, ["x"]) == {"none": ["x"]}


def test_regex_group_select_past_the_matches_is_an_error():
    p = {
        "name": "g",
        "filter": [
            {"function": "regex", "regex_pattern": r"\d", "group_select": 3},
            {"function": "take_first"},
        ],
    }
    with pytest.raises(IndexError):
        lmeval_filtered(p, ["1 2"])
    with pytest.raises(ScoreError, match="group_select 3 but only 2 match"):
        apply_filters([p], ["1 2"])


def test_exact_match_equals_lmevals():
    from lm_eval.api.metrics import exact_match_hf_evaluate as theirs

    rng = random.Random(0)
    refs = ["42", "1234", "Sunset Boulevard", "The Beatles", "beatles", "3.5", "", "ÉCOLE"]
    preds = refs + [
        "$1,234",
        "sunset boulevard!",
        "the Beatles",
        "Beatles.",
        "42.",
        "école",
        "4 2",
        "72 #### 42",
        "12abc",
    ]
    options = [
        {},
        {"ignore_case": True},
        {"ignore_case": True, "ignore_punctuation": True},
        {"ignore_numbers": True},
        {
            "ignore_case": True,
            "ignore_punctuation": False,
            "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"],
        },
        {
            "ignore_case": True,
            "ignore_punctuation": True,
            "regexes_to_ignore": ["\\b(?:The |the |An |A |The |a |an )"],
        },
    ]
    for kw in options:
        for _ in range(60):
            k = rng.randrange(1, 4)
            p, r = [rng.choice(preds)] * k, rng.sample(refs, k)
            assert exact_match_hf_evaluate(p, r, **kw) == theirs(predictions=p, references=r, **kw)
    nq = options[-1]
    assert exact_match_hf_evaluate(["the Beatles"], ["The Beatles"], **nq)["exact_match"] == 1.0
    assert exact_match_hf_evaluate(["the Beatles"], ["Beatles"], **nq)["exact_match"] == 1.0


# ----------------------------------------------------------------- process_results
def fake_generation(name: str, i: int, targets: list[str]) -> str:
    """A realistic answer of each kind, cut at a stop string as generate_until returns it."""
    t = targets[i % len(targets)]
    if name == "gsm8k_cot":
        n = int(t.replace(",", ""))
        return [
            f" She has 3 + 4 = 7 left. The answer is {t}.\n\n",
            f" The total is ${n:,}.",
            " I cannot tell.",
            f" First 12, then 7, so {n}",
            f" The answer is {n + 1}.",
            f" The answer is {t}",
            f" 12 * 3 = 36. The answer is {n}.0.",
        ][i % 7]
    return [
        f" {t}",
        f" {t.upper()}!",
        f" the {t}",
        "  An " + t.lower(),
        " Paris",
        "",
        f" {t}'s",
    ][i % 7]


@pytest.mark.parametrize("name", list(ORACLE))
def test_process_results_equal_lmevals(name, lmeval):
    task, docs, lt = lmeval(name)
    n = ORACLE[name][2]
    reqs = build_generation_requests(task, docs, list(range(n)))
    gens = [fake_generation(name, i, r["targets"]) for i, r in enumerate(reqs)]
    insts = sorted(lt.instances, key=lambda x: x.doc_id)
    for inst, g in zip(insts, gens):
        inst.resps, inst.filtered_resps = [g], {}
    lt.apply_filters()
    df = pl.DataFrame(
        {
            "doc_id": [r["doc_id"] for r in reqs],
            "generation": gens,
            "targets": [r["targets"] for r in reqs],
        }
    ).reverse()  # any row order
    ours = per_doc_generation_metrics(df, task.spec)
    assert ours["doc_id"] == list(range(n))
    assert list(ours["metrics"]) == task.metrics
    for key in task.filter_names:
        for inst, doc, answer in zip(insts, docs, ours["answers"][key]):
            assert answer == inst.filtered_resps[key]
            theirs = lt.process_results(doc, [inst.filtered_resps[key]])
            assert ours["metrics"][f"exact_match,{key}"][inst.doc_id] == theirs["exact_match"]
        vals = ours["metrics"][f"exact_match,{key}"]
        assert 0 < sum(vals) < n  # some right, some wrong
    if name != "gsm8k_cot":  # a multi-target doc right through a non-first alias
        i = next(
            i
            for i, r in enumerate(reqs)
            if i % 7 == 1 and i % len(r["targets"]) != 0  # " {ALIAS}!", not the first
        )
        assert ours["metrics"][task.primary_metric][i] == 1.0


def _write_shard(tmp_path, i, n_shards, df, task, n_docs):
    """A shard's files as test_scoring writes them, for ``task``."""
    from test_scoring import write_shard

    meta = {"task": task.name, "task_hash": task.hash, "task_definition": task.spec}
    return write_shard(tmp_path, i, n_shards, df, n_docs_total=n_docs, **meta)


def test_compute_score_of_generation_shards(tmp_path, lmeval):
    from lm_eval.api.metrics import mean_stderr

    task, docs, lt = lmeval("gsm8k_cot")
    reqs = build_generation_requests(task, docs, list(range(30)))
    gens = [fake_generation("gsm8k_cot", i, r["targets"]) for i, r in enumerate(reqs)]
    # the engine's columns, one row per document
    df = pl.DataFrame(
        {
            "doc_id": [r["doc_id"] for r in reqs],
            "context": [r["context"] for r in reqs],
            "generation": gens,
            "gen_tokens": [len(g.split()) for g in gens],
            "stop_reason": ["until"] * 30,
            "ctx_tokens": [len(r["context"].split()) for r in reqs],
            "targets": [r["targets"] for r in reqs],
            "from_store": [False] * 30,
        },
        schema_overrides={"doc_id": pl.Int64, "gen_tokens": pl.Int32, "ctx_tokens": pl.Int32},
    )
    a = _write_shard(tmp_path, 0, 2, df.filter(pl.col("doc_id") < 15), task, 30)
    b = _write_shard(tmp_path, 1, 2, df.filter(pl.col("doc_id") >= 15), task, 30)
    r = compute_score(
        [a[0], b[0]],
        [a[1], b[1]],
        model="m",
        metrics=task.metrics,
        primary_metric=task.primary_metric,
    )
    assert r["n"] == 30 and list(r["metrics"]) == task.metrics
    for inst, g in zip(sorted(lt.instances, key=lambda x: x.doc_id), gens):
        inst.resps, inst.filtered_resps = [g], {}
    lt.apply_filters()
    for key in task.filter_names:
        vals = [
            lt.process_results(d, [i.filtered_resps[key]])["exact_match"]
            for d, i in zip(docs, sorted(lt.instances, key=lambda x: x.doc_id))
        ]
        got = r["metrics"][f"exact_match,{key}"]
        assert got["value"] == sum(vals) / len(vals)
        assert math.isclose(got["stderr"], mean_stderr(vals), rel_tol=1e-12)
    assert "filters.py" in SCORING_MODULES
    with pytest.raises(ScoreError, match=r"metric\(s\) \['acc'\] not computed"):
        compute_score([a[0], b[0]], [a[1], b[1]], model="m", metrics=["acc"], primary_metric="acc")
    bad = df.with_columns(
        pl.when(pl.col("doc_id") == 3)
        .then(pl.lit([], pl.List(pl.String)))
        .otherwise(pl.col("targets"))
        .alias("targets")
    )
    c = _write_shard(tmp_path, 2, 1, bad, task, 30)
    with pytest.raises(ScoreError, match=r"2\.json: doc 3: no target"):
        compute_score(
            [c[0]], [c[1]], model="m", metrics=task.metrics, primary_metric=task.primary_metric
        )


# ----------------------------------------------------------------- bad input, named
GOOD = {
    "task": "g",
    "dataset": {"source": "d.jsonl"},
    "output_type": "generate_until",
    "doc_to_text": "Q: {{q}}\nA:",
    "doc_to_target": "{{answers}}",
    "generation_kwargs": {"until": ["\n"], "max_gen_toks": 32},
    "filter_list": [
        {
            "name": "strict",
            "filter": [
                {"function": "regex", "regex_pattern": r"(\d+)"},
                {"function": "take_first"},
            ],
        }
    ],
    "metric_list": [{"metric": "exact_match", "ignore_case": True}],
}


def _task_file(tmp_path, **changes) -> Path:
    spec = json.loads(json.dumps(GOOD))
    for k, v in changes.items():
        if v is None:
            spec.pop(k, None)
        else:
            spec[k] = v
    (tmp_path / "d.jsonl").write_text(
        '{"q": "1+1", "answers": ["2", "two"]}\n{"q": "2+2", "answers": []}\n'
    )
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _regex_step(**kw):
    return [{"name": "s", "filter": [{"function": "regex", **kw}, {"function": "take_first"}]}]


@pytest.mark.parametrize(
    "changes, error",
    [
        (
            {"filter_list": _regex_step(regex_pattern="(\\d+")},
            r"g\.yaml: filter_list: filter_list\[0\] \(s\) step 0 \(regex\): regex_pattern "
            r"'\(\\\\d\+' does not compile",
        ),
        (
            {"filter_list": [{"name": "s", "filter": [{"function": "majority_vot"}]}]},
            r"g\.yaml: filter_list: .*unknown filter function 'majority_vot'",
        ),
        (
            {"filter_list": _regex_step(regex_pattern="x", group_select="last")},
            r"g\.yaml: filter_list: .*group_select must be an integer",
        ),
        (
            {"filter_list": _regex_step(regex_pattern="x", flags="i")},
            r"g\.yaml: filter_list: .*unknown argument\(s\) \['flags'\]",
        ),
        (
            {
                "filter_list": [
                    {"name": "s", "filter": [{"function": "take_first"}, {"function": "lowercase"}]}
                ]
            },
            r"g\.yaml: filter_list: .*take_first must be the last step",
        ),
        (
            {
                "filter_list": [
                    {
                        "name": "s",
                        "filter": [
                            {"function": "map", "mapping_dict": {"a": "b"}},
                            {"function": "take_first"},
                        ],
                    }
                ]
            },
            r"g\.yaml: filter_list: .*default_value must be a string",
        ),
        (
            {"metric_list": [{"metric": "f1"}]},
            r"g\.yaml: metric_list: metric_list\[0\]: unknown metric 'f1'",
        ),
        (
            {"metric_list": [{"metric": "exact_match", "ignore_cases": True}]},
            r"g\.yaml: metric_list: .*unknown option\(s\) \['ignore_cases'\]",
        ),
        (
            {"metric_list": [{"metric": "exact_match", "regexes_to_ignore": ["[a-"]}]},
            r"g\.yaml: metric_list: .*regexes_to_ignore '\[a-' does not compile",
        ),
        (
            {"generation_kwargs": {"until": "\n"}},
            r"g\.yaml: generation_kwargs\.until: '\\n' is not of type 'array'",
        ),
        (
            {"generation_kwargs": {"until": ["\n", 3]}},
            r"g\.yaml: generation_kwargs\.until\.1: 3 is not of type 'string'",
        ),
        (
            {"generation_kwargs": {"until": ["\n"], "max_gen_toks": 0}},
            r"g\.yaml: generation_kwargs\.max_gen_toks: 0 is less than the minimum of 1",
        ),
        (
            {"generation_kwargs": {"until": ["\n"], "max_gen_toks": -5}},
            r"g\.yaml: generation_kwargs\.max_gen_toks: -5 is less than the minimum of 1",
        ),
        (
            {"generation_kwargs": {"until": ["\n"], "max_gen_toks": "256"}},
            r"g\.yaml: generation_kwargs\.max_gen_toks: '256' is not of type 'integer'",
        ),
        (
            {"generation_kwargs": {"until": ["\n"], "max_gen_toks": 1.5}},
            r"g\.yaml: generation_kwargs\.max_gen_toks: 1\.5 is not of type 'integer'",
        ),
        (
            {"generation_kwargs": {"until": ["\n"], "max_new_tokens": 5}},
            r"g\.yaml: generation_kwargs: unknown field\(s\) \['max_new_tokens'\]",
        ),
        (
            {"generation_kwargs": {"until": ["\n"], "do_sample": True, "temperature": 0}},
            r"g\.yaml: generation_kwargs: do_sample: true needs temperature > 0",
        ),
        ({"doc_to_choice": ["a", "b"]}, r"g\.yaml: doc_to_choice is not used by generate_until"),
        ({"metrics": ["acc"]}, r"g\.yaml: metrics is not used by generate_until"),
        ({"primary_metric": "exact_match"}, r"g\.yaml: primary_metric 'exact_match' is not one"),
        (
            {"fewshot_config": {"sampler": "balanced"}},
            r"g\.yaml: fewshot\.sampler \(fewshot_config\.sampler\): 'balanced' is not one of",
        ),
        (
            {"fewshot_config": {"samples": [{"q": "x", "answers": ["1"]}]}, "num_fewshot": 2},
            r"g\.yaml: num_fewshot 2 but fewshot_config\.samples has 1",
        ),
        ({"num_fewshot": 1, "fewshot": {"n": 1}}, r"g\.yaml: both fewshot and lm-eval's"),
        (
            {"dataset": {"source": "d.jsonl", "feild": "doc"}},
            r"g\.yaml: dataset: unknown field\(s\) \['feild'\]",
        ),
    ],
)
def test_bad_definitions_are_named_at_load_time(tmp_path, changes, error):
    load_task(_task_file(tmp_path))  # the base is fine
    with pytest.raises(TaskError, match=error):
        load_task(_task_file(tmp_path, **changes))


def test_config_overrides_are_checked_too(tmp_path):
    with pytest.raises(TaskError, match=r"g\.yaml: generation_kwargs\.max_gen_toks"):
        load_task(_task_file(tmp_path), {"generation_kwargs": {"max_gen_toks": 0}})


def test_document_without_target_is_named(tmp_path):
    task = load_task(_task_file(tmp_path))
    docs = load_docs(task)
    assert build_generation_requests(task, docs[:1], [0])[0]["targets"] == ["2", "two"]
    with pytest.raises(TaskError, match=r"g\.yaml: doc 1: doc_to_target gave no target"):
        build_generation_requests(task, docs, [0, 1])
    by_field = load_task(_task_file(tmp_path, doc_to_target="answers"))
    with pytest.raises(TaskError, match=r"g\.yaml: doc 7: doc_to_target gave no target"):
        build_generation_requests(by_field, docs[1:] * 8, [7])


def test_dataset_field_and_columns(tmp_path):
    lines = [
        {"doc": {"q": "1+1", "answers": ["2"], "extra": 1}, "request": "x"},
        {"doc": {"q": "2+2", "answers": ["4"], "extra": 2}},
    ]
    with gzip.open(tmp_path / "r.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(x) + "\n" for x in lines))
    ds = {"source": "r.jsonl.gz", "split": "test", "field": "doc", "columns": ["q", "answers"]}
    task = load_task(_task_file(tmp_path, dataset=ds))
    assert load_docs(task) == [{"q": "1+1", "answers": ["2"]}, {"q": "2+2", "answers": ["4"]}]
    assert task.split == "test"
    missing = load_task(_task_file(tmp_path, dataset={**ds, "columns": ["q", "nope"]}))
    with pytest.raises(TaskError, match=r"g\.yaml: dataset\.columns \['nope'\] not in"):
        load_docs(missing)
    nofield = load_task(_task_file(tmp_path, dataset={**ds, "field": "docs"}))
    with pytest.raises(TaskError, match=r"g\.yaml: dataset\.field 'docs': line 1 of r\.jsonl"):
        load_docs(nofield)


# ----------------------------------------------------------------- multiple choice unchanged
# Task.hash of every multiple-choice task as of commit a63eb9d (before generation tasks):
# their cached predictions are filed under these hashes and must stay valid.
MC_HASHES_A63EB9D = {
    "arc_challenge": "fed035ace22e",
    "arc_easy": "f6460c84b50b",
    "boolq": "1be56abae8d4",
    "hellaswag": "0ff1a51b309b",
    "mmlu_abstract_algebra": "3e037477f55f",
    "mmlu_anatomy": "7a91f2c00e5c",
    "mmlu_astronomy": "14b66a1f7e6e",
    "mmlu_business_ethics": "8f1f80117878",
    "mmlu_clinical_knowledge": "14d28342416c",
    "mmlu_college_biology": "da8b53fe6dc8",
    "mmlu_college_chemistry": "bc4b6c2aa6e9",
    "mmlu_college_computer_science": "1844025a89a9",
    "mmlu_college_mathematics": "82003bede5cc",
    "mmlu_college_medicine": "d5c4b812a1af",
    "mmlu_college_physics": "039036490671",
    "mmlu_computer_security": "85deda04ba72",
    "mmlu_conceptual_physics": "d7611a529dcc",
    "mmlu_econometrics": "6e789d17d765",
    "mmlu_electrical_engineering": "c2c635c395ad",
    "mmlu_elementary_mathematics": "84ea51cb67fb",
    "mmlu_formal_logic": "4a6b36e31b7b",
    "mmlu_global_facts": "eec46a812a1b",
    "mmlu_high_school_biology": "150a6b27fec4",
    "mmlu_high_school_chemistry": "96ab68cddaf9",
    "mmlu_high_school_computer_science": "f20b097caa1d",
    "mmlu_high_school_european_history": "2557f89e6d34",
    "mmlu_high_school_geography": "a00d17c5f146",
    "mmlu_high_school_government_and_politics": "bd5f16426262",
    "mmlu_high_school_macroeconomics": "9a886e2d712d",
    "mmlu_high_school_mathematics": "362e6ee9e7dc",
    "mmlu_high_school_microeconomics": "915a3280c787",
    "mmlu_high_school_physics": "377ff3d76c29",
    "mmlu_high_school_psychology": "d387f73528c8",
    "mmlu_high_school_statistics": "817d1bbc41e3",
    "mmlu_high_school_us_history": "d8b89ce802b3",
    "mmlu_high_school_world_history": "f63a89d7bde8",
    "mmlu_human_aging": "9f379d538b0e",
    "mmlu_human_sexuality": "a63b3d3ee6f6",
    "mmlu_international_law": "9946c9560abe",
    "mmlu_jurisprudence": "76693d21c8c9",
    "mmlu_logical_fallacies": "62eb40157091",
    "mmlu_machine_learning": "090b8cc0ab21",
    "mmlu_management": "a03ae967e011",
    "mmlu_marketing": "b1721686bb54",
    "mmlu_medical_genetics": "eb62c3569290",
    "mmlu_miscellaneous": "6a82b06a0a53",
    "mmlu_moral_disputes": "3fbdd7a0bd31",
    "mmlu_moral_scenarios": "633bb68e427c",
    "mmlu_nutrition": "f3c5b3fb8440",
    "mmlu_philosophy": "2aef81078bbf",
    "mmlu_prehistory": "6edcc33d3f39",
    "mmlu_professional_accounting": "119dd754c4f6",
    "mmlu_professional_law": "7ffa7e075362",
    "mmlu_professional_medicine": "57b97cef6875",
    "mmlu_professional_psychology": "6b87ee0004ad",
    "mmlu_public_relations": "e0077ba99f5b",
    "mmlu_security_studies": "e6581a96cfd4",
    "mmlu_sociology": "1efbc34b2f81",
    "mmlu_us_foreign_policy": "fd29d6336f27",
    "mmlu_virology": "6ede17bb09d7",
    "mmlu_world_religions": "1618a6677b76",
    "openbookqa": "9ec8cbe0c166",
    "piqa": "14774feb4091",
    "winogrande": "91bb9f871a0d",
}
# with config overrides, as config.yaml writes them (also as of a63eb9d)
MC_OVERRIDE_HASHES_A63EB9D = [
    # random few-shot: lm-eval's draws (one generator per task) since #13, a new hash
    ("hellaswag", {"fewshot": {"n": 5}}, "ed6a2feb4e90"),
    ("arc_easy", {"limit": 250}, "661839dbbb81"),
    ("mmlu_anatomy", {"limit": 4, "fewshot": {"n": 2}}, "df85acb037e0"),
]


def test_multiple_choice_task_hashes_unchanged():
    index = find_task_files(TASKS)
    mc = {
        n: p
        for n, p in index.items()
        if not is_group(p)
        and n not in ORACLE
        and load_task(p).output_type in ("multiple_choice", "multiple_input")
    }
    assert {n: load_task(p).hash for n, p in mc.items()} == MC_HASHES_A63EB9D
    for name, overrides, want in MC_OVERRIDE_HASHES_A63EB9D:
        assert load_task(index[name], overrides).hash == want


def test_multiple_choice_requests_keep_description_and_fewshot():
    task = load_task(TASKS / "mmlu" / "mmlu_anatomy.yaml", {"limit": 1, "fewshot": {"n": 1}})
    ctx = build_requests(task, load_docs(task), [0], pool=fewshot_pool(task))[0]["context"]
    assert ctx.startswith(
        "The following are multiple choice questions (with answers) about anatomy.\n\n"
        "What is the embryological origin of the hyoid bone?"
    )
    with pytest.raises(TaskError, match="not a generate_until task"):
        _ = task.generation_kwargs


# sha256 (first 16 hex) of build_requests on the first 20 documents (few-shot cases: 5),
# recorded at a63eb9d: the requests of multiple-choice tasks are unchanged too
MC_REQUESTS_A63EB9D = [
    ("arc_easy", {}, 20, "77f77f076e5ae33e"),
    ("arc_challenge", {}, 20, "68c549b9e1d32091"),
    ("hellaswag", {}, 20, "9c95d1cf6eb2a024"),
    ("winogrande", {}, 20, "fa28b568c59dc525"),
    ("boolq", {}, 20, "8a725dee9201a757"),
    ("piqa", {}, 20, "1952bfadaa574422"),
    ("openbookqa", {}, 20, "6c7f05d99dc8bc24"),
    ("mmlu_anatomy", {}, 20, "a107d983d5b7a86a"),
    ("mmlu_anatomy", {"fewshot": {"n": 3}}, 5, "51e1f80297ae80ed"),
    # random few-shot: lm-eval's draws (one generator per task) since #13
    ("arc_easy", {"fewshot": {"n": 3}}, 5, "d038bd3538eb179c"),
    ("winogrande", {"fewshot": {"n": 2}}, 5, "f5a27148e4449bf4"),
]


def test_multiple_choice_requests_unchanged():
    from llmboard.hashing import sha256_json

    index = find_task_files(TASKS)
    for name, overrides, n, want in MC_REQUESTS_A63EB9D:
        task = load_task(index[name], {"limit": n, **overrides})
        rows = build_requests(task, load_docs(task), list(range(n)), pool=fewshot_pool(task))
        assert sha256_json(rows).startswith(want), (name, overrides)
