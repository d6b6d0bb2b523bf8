"""Prompts as lm-eval 0.4.13 builds them: chat templates, system instructions, few-shot
examples as turns or one message, and its few-shot samplers, request for request.

The rendering tests run lm-eval's own ``build_all_requests`` (its ``fewshot_context``,
samplers and ``HFLM.apply_chat_template``, bound to the real SmolLM2 tokenizer) on the
same documents and compare every context and continuation byte for byte. The slow
tests run lm-eval's ``simple_evaluate`` with ``apply_chat_template`` on the real
SmolLM2-135M-Instruct in fp32 and compare per-request log-likelihoods, accuracy and
generated texts with llmboard's engine.
"""

from __future__ import annotations

import functools
import logging
import shutil
import types
from pathlib import Path

import polars as pl
import pytest

from llmboard.settings import Prompting, SettingsError, load_settings
from llmboard.tasks.chat import ChatTemplateError, choose, renderer, templates_of
from llmboard.tasks.definitions import find_task_files, load_task
from llmboard.tasks.documents import fewshot_pool, load_docs, load_split
from llmboard.tasks.prompts import build_generation_requests, build_requests
from lmeval_oracle import (
    lmeval_generation_config,
    lmeval_task,
    mc_config,
    per_request_from_samples,
    write_jsonl,
)

from conftest import REPO, SMOL_SOURCE, save_tiny

logging.getLogger("lm_eval").setLevel(logging.ERROR)
INDEX = find_task_files(REPO / "tasks")
SYSTEM = "You are a careful assistant. Answer with the correct option."
PROMPTINGS = {  # name -> ours; lm-eval gets the same three settings
    "raw": Prompting(),
    "raw+system": Prompting(False, SYSTEM, False),
    "chat": Prompting(True, None, False),
    "chat+multiturn": Prompting(True, None, True),
    "chat+system": Prompting(True, SYSTEM, False),
    "chat+multiturn+system": Prompting(True, SYSTEM, True),
}
# a template that refuses the system role (as Gemma's and Mistral's first ones do)
NO_SYSTEM = (
    "{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "<turn>{{ m['role'] }}\n{{ m['content'] }}</turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<turn>assistant\n{% endif %}"
)


# ------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def smol_tok(smol_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smol_dir)


def lmeval_chat(tokenizer):
    """lm-eval's own ``HFLM.apply_chat_template``, bound to a tokenizer (no model loaded)."""
    from lm_eval.models.huggingface import HFLM

    fake = types.SimpleNamespace(tokenizer=tokenizer, chat_template_args={})
    return functools.partial(HFLM.apply_chat_template, fake)


def lmeval_arc(work: Path, limit: int, n_shots: int):
    """(our ARC-Easy with ``n_shots`` drawn at random from its own validation split,
    lm-eval's task config): lm-eval evaluates the split's first ``limit`` documents (its
    test split) and draws from the whole split (``fewshot_split: test``: it leaves the
    document out)."""
    work.mkdir(parents=True, exist_ok=True)
    ours = load_task(
        INDEX["arc_easy"],
        {"limit": limit, "fewshot": {"n": n_shots, "split": "validation", "sampler": "random"}},
    )
    pool = load_split(ours, "validation")
    data = write_jsonl(work / "arc.jsonl", [pool[i] for i in range(len(pool))])
    extra = {"num_fewshot": n_shots, "fewshot_split": "test"} if n_shots else {}
    return ours, mc_config(ours, f"arc_{n_shots}shot", {"test": data}, **extra)


def lmeval_mmlu(work: Path, limit: int, n_shots: int):
    """MMLU anatomy, ``n_shots`` first_n from its dev split, with its description."""
    work.mkdir(parents=True, exist_ok=True)
    ours = load_task(INDEX["mmlu_anatomy"], {"limit": limit, "fewshot": {"n": n_shots}})
    dev = load_split(ours, "dev")
    files = {
        "test": write_jsonl(work / "mmlu_test.jsonl", load_docs(ours)),
        "dev": write_jsonl(work / "mmlu_dev.jsonl", [dev[i] for i in range(len(dev))]),
    }
    cfg = mc_config(
        ours,
        "mmlu_x",
        files,
        num_fewshot=n_shots,
        fewshot_split="dev",
        fewshot_config={"sampler": "first_n"},
    )
    return ours, cfg


def lmeval_winogrande(work: Path, limit: int, n_shots: int):
    """Winogrande through lm-eval's own partial-scoring functions, few-shot drawn at random
    from the evaluated split."""
    import importlib

    work.mkdir(parents=True, exist_ok=True)
    fns = importlib.import_module("lm_eval.tasks.winogrande.preprocess_winogrande")
    ours = load_task(
        INDEX["winogrande"], {"limit": limit, "fewshot": {"n": n_shots, "sampler": "random"}}
    )
    whole = load_split(ours)  # the whole split is lm-eval's test split, and the pool
    data = write_jsonl(work / "wino.jsonl", [whole[i] for i in range(len(whole))])
    cfg = mc_config(ours, "wino_x", {"test": data}, num_fewshot=n_shots, fewshot_split="test")
    cfg.update({k: getattr(fns, k) for k in ("doc_to_text", "doc_to_target", "doc_to_choice")})
    return ours, cfg


def build_lmeval_requests(lt, limit: int, prompting: Prompting, chat):
    """lm-eval's task ``lt`` with its requests built as ``prompting`` says."""
    on = prompting.chat_template is not False
    lt.build_all_requests(
        limit=limit,
        system_instruction=prompting.system_instruction,
        apply_chat_template=on,
        fewshot_as_multiturn=prompting.fewshot_as_multiturn,
        chat_template=chat if on else None,
    )
    return lt


def lmeval_requests(cfg: dict, limit: int, prompting: Prompting, chat):
    """lm-eval's requests for its task ``cfg``: (doc_id, idx) -> arguments."""
    task = build_lmeval_requests(lmeval_task(cfg), limit, prompting, chat)
    return {(i.doc_id, i.idx): i.args for i in task.instances}


def ours_sharded(task, prompting, chat, n_shards: int, order=None) -> list[dict]:
    """Our requests, built shard by shard in ``order`` (a later shard first: it must replay
    the few-shot draws of the documents before it)."""
    from llmboard.tasks.documents import shard_range

    docs, pool = load_docs(task), fewshot_pool(task)
    rows = []
    for s in order or range(n_shards):
        ids = list(shard_range(len(docs), s, n_shards))
        rows += build_requests(task, docs, ids, prompting, chat, pool=pool)
    return sorted(rows, key=lambda r: (r["doc_id"], r["choice"]))


def assert_same_requests(rows: list[dict], theirs: dict) -> None:
    assert len(rows) == len(theirs)
    for r in rows:
        assert theirs[(r["doc_id"], r["choice"])] == (r["context"], r["continuation"]), (
            r["doc_id"],
            r["choice"],
        )


# ------------------------------------------------------------------ rendering, no model
@pytest.mark.parametrize("how", list(PROMPTINGS))
def test_arc_25_shot_random_sharded_renders_as_lmeval(how, smol_tok, tmp_path):
    """25 examples drawn at random from ARC-Easy's own validation split (the document
    left out), 3 shards built last first: every context and continuation is lm-eval's."""
    prompting = PROMPTINGS[how]
    task, cfg = lmeval_arc(tmp_path, limit=12, n_shots=25)
    theirs = lmeval_requests(cfg, 12, prompting, lmeval_chat(smol_tok))
    chat = renderer(smol_tok, True) if prompting.chat_template else None
    rows = ours_sharded(task, prompting, chat, 3, order=[2, 0, 1])
    assert_same_requests(rows, theirs)
    if prompting.chat_template:
        assert rows[0]["context"].startswith("<|im_start|>system\n")
        assert rows[0]["context"].endswith("<|im_start|>assistant\n")
        # lm-eval drops the target delimiter after a generation prompt
        assert not rows[0]["continuation"].startswith(" ")
    turns = rows[0]["context"].count("<|im_start|>assistant\n")
    assert turns == (26 if prompting.fewshot_as_multiturn else 1 if prompting.chat_template else 0)


@pytest.mark.parametrize("how", ["raw", "chat", "chat+multiturn+system"])
def test_arc_zero_shot_renders_as_lmeval(how, smol_tok, tmp_path):
    prompting = PROMPTINGS[how]
    task, cfg = lmeval_arc(tmp_path, limit=20, n_shots=0)
    theirs = lmeval_requests(cfg, 20, prompting, lmeval_chat(smol_tok))
    chat = renderer(smol_tok, True) if prompting.chat_template else None
    assert_same_requests(ours_sharded(task, prompting, chat, 1), theirs)


@pytest.mark.parametrize("how", ["raw", "chat", "chat+multiturn+system"])
def test_mmlu_first_n_and_description_render_as_lmeval(how, smol_tok, tmp_path):
    """first_n from the dev split; the description becomes (part of) the system message."""
    prompting = PROMPTINGS[how]
    task, cfg = lmeval_mmlu(tmp_path, limit=6, n_shots=5)
    theirs = lmeval_requests(cfg, 6, prompting, lmeval_chat(smol_tok))
    chat = renderer(smol_tok, True) if prompting.chat_template else None
    rows = ours_sharded(task, prompting, chat, 2, order=[1, 0])
    assert_same_requests(rows, theirs)
    if prompting.chat_template:
        system = rows[0]["context"].split("<|im_end|>")[0]
        assert "multiple choice questions (with answers) about anatomy" in system


@pytest.mark.parametrize("how", ["raw", "chat", "chat+multiturn+system"])
def test_winogrande_multiple_input_renders_as_lmeval(how, smol_tok, tmp_path):
    """One context per option (the sentence up to the blank), few-shot examples as the
    correct completion and the rest of the sentence."""
    prompting = PROMPTINGS[how]
    task, cfg = lmeval_winogrande(tmp_path, limit=6, n_shots=3)
    theirs = lmeval_requests(cfg, 6, prompting, lmeval_chat(smol_tok))
    chat = renderer(smol_tok, True) if prompting.chat_template else None
    assert_same_requests(ours_sharded(task, prompting, chat, 3, order=[1, 2, 0]), theirs)


def lmeval_generation(name: str, root: Path, n: int, prompting: Prompting, chat):
    """Our generation task and lm-eval's own (its YAML on the same documents), requests
    built with ``prompting``."""
    task = load_task(INDEX[name], {"limit": n})
    docs = load_docs(task)
    cfg = lmeval_generation_config(name, docs, root / f"{name}.jsonl", root)
    return task, docs, build_lmeval_requests(lmeval_task(cfg), n, prompting, chat)


@pytest.mark.parametrize("name", ["gsm8k_cot", "triviaqa"])
@pytest.mark.parametrize("how", ["raw+system", "chat", "chat+multiturn", "chat+multiturn+system"])
def test_generation_prompts_render_as_lmeval(name, how, smol_tok, tmp_path):
    """gsm8k_cot: 8 exemplars (fewshot_config.samples, first_n) as turns or one message;
    triviaqa: zero-shot with its description-less prompt. Stop strings are lm-eval's."""
    prompting = PROMPTINGS[how]
    task, docs, lt = lmeval_generation(name, tmp_path, 6, prompting, lmeval_chat(smol_tok))
    chat = renderer(smol_tok, True) if prompting.chat_template else None
    reqs = build_generation_requests(task, docs, list(range(len(docs))), prompting, chat)
    insts = sorted(lt.instances, key=lambda i: i.doc_id)
    assert [i.args[0] for i in insts] == [r["context"] for r in reqs]
    assert [list(i.args[1]["until"]) for i in insts] == [r["until"] for r in reqs]
    if name == "gsm8k_cot" and prompting.fewshot_as_multiturn:
        assert reqs[0]["context"].count("<|im_start|>assistant\n") == 9  # 8 answers + prompt


def test_template_that_rejects_the_system_role(smol_tok, tmp_path):
    """lm-eval retries without the system message (its instruction and description are
    then dropped); llmboard renders the same."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(Path(smol_tok.name_or_path))
    tok.chat_template = NO_SYSTEM
    for how in ("chat+system", "chat+multiturn+system"):
        prompting = PROMPTINGS[how]
        task, cfg = lmeval_mmlu(tmp_path / how, limit=3, n_shots=2)
        theirs = lmeval_requests(cfg, 3, prompting, lmeval_chat(tok))
        rows = ours_sharded(task, prompting, renderer(tok, True), 1)
        assert_same_requests(rows, theirs)
        assert "<turn>system" not in rows[0]["context"] and SYSTEM not in rows[0]["context"]


def test_random_sampler_is_lmevals_draw_for_draw(tmp_path):
    """Duplicates of the evaluated document in the pool (lm-eval drops every copy, by
    equality, and draws again when fewer than n remain), a pool just one larger than n,
    and first_n without the document: the same examples as lm-eval's samplers give."""
    from lm_eval.api.samplers import ContextSampler, FirstNSampler

    # documents i and i + 7 are equal: every document has a copy in the pool
    rows = [{"q": f"q{i % 7}", "options": ["a", "b"], "gold": i % 7 % 2} for i in range(14)]
    write_jsonl(tmp_path / "d.jsonl", rows)
    base = (
        "task: dup\ndataset: {source: d.jsonl, split: validation}\n"
        'doc_to_text: "{{q}}"\ndoc_to_choice: "{{options}}"\ndoc_to_target: gold\n'
    )
    for sampler, n in (("random", 3), ("random", 11), ("first_n", 4)):
        (tmp_path / "t.yaml").write_text(base + f"fewshot: {{n: {n}, sampler: {sampler}}}\n")
        task = load_task(tmp_path / "t.yaml")
        docs = load_docs(task)
        cls = ContextSampler if sampler == "random" else FirstNSampler
        ref = cls(list(docs), rnd=None).set_rnd(1234)
        want = [[docs.index(x) for x in ref.sample(n, eval_doc=d)] for d in docs]
        # later documents first: each replays the draws before it
        for start in (9, 0, 5):
            got = build_requests(task, docs, range(start, len(docs)), pool=fewshot_pool(task))
            shots = {}
            for r in got:
                shots.setdefault(r["doc_id"], r["context"])
            for i in range(start, len(docs)):
                text = "".join(
                    f"{docs[j]['q']} {docs[j]['options'][docs[j]['gold']]}\n\n" for j in want[i]
                )
                assert shots[i] == text + docs[i]["q"], (sampler, n, i)


def test_random_fewshot_tasks_get_a_new_hash_and_others_keep_theirs():
    """Random few-shot prompts changed (lm-eval's draws): their task hash says so, so
    predictions made with the earlier draws are not taken for current ones; every other
    task keeps the hash of its definition."""
    from llmboard.hashing import sha256_json, short
    from llmboard.tasks.definitions import NOT_HASHED

    def spec_hash(t):
        return short(sha256_json({k: v for k, v in t.spec.items() if k not in NOT_HASHED}))

    for overrides, changed in (
        ({"fewshot": {"n": 3}}, True),
        ({"fewshot": {"n": 3, "sampler": "first_n"}}, False),
        ({"limit": 250}, False),
    ):
        t = load_task(INDEX["arc_easy"], overrides)
        assert (t.hash != spec_hash(t)) == changed, overrides
    assert load_task(INDEX["arc_easy"], {"limit": 250}).hash == "661839dbbb81"  # as at a63eb9d


# ------------------------------------------------------------------ templates a model carries
def test_templates_read_from_files_match_transformers(smol_dir, smol_gguf, smol_tok, tmp_path):
    assert templates_of(smol_gguf) == templates_of(smol_dir) == {"default": smol_tok.chat_template}
    # several templates: transformers' chat_template.jinja + additional_chat_templates/
    folder = tmp_path / "multi"
    shutil.copytree(smol_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / "additional_chat_templates").mkdir()
    (folder / "additional_chat_templates" / "plain.jinja").write_text(NO_SYSTEM)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    assert (
        templates_of(folder)
        == tok.chat_template
        == {
            "default": smol_tok.chat_template,
            "plain": NO_SYSTEM,
        }
    )
    msgs = [{"role": "user", "content": "Hi"}]
    assert renderer(tok, "plain")(msgs) == "<turn>user\nHi</turn>\n<turn>assistant\n"
    assert renderer(tok, True)(msgs).startswith("<|im_start|>system\n")
    with pytest.raises(ChatTemplateError, match=r"where: chat_template: no template named 'x'"):
        choose(templates_of(folder), "x", "where")
    with pytest.raises(ChatTemplateError, match="has no chat template"):
        choose({}, True, "where")


# ------------------------------------------------------------------ config and plan
def _settings(models: dict):
    return load_settings({"models": models, "tasks": {"arc_easy": {"limit": 5}}})


def test_prompting_settings_and_their_errors():
    s = _settings(
        {
            "a": {"source": SMOL_SOURCE},
            "b": {"source": SMOL_SOURCE, "chat_template": True},
            "c": {"source": SMOL_SOURCE, "chat_template": True, "fewshot_as_multiturn": False},
            "d": {"source": SMOL_SOURCE, "system_instruction": ""},
        }
    )
    assert s.models["a"].prompting.is_raw and s.models["d"].prompting.is_raw
    assert s.models["b"].prompting == Prompting(True, None, True)  # lm-eval's CLI default
    assert s.models["b"].prompting.label == "chat+multiturn"
    assert s.models["c"].prompting.label == "chat"
    with pytest.raises(SettingsError, match=r"models\.e\.fewshot_as_multiturn: true needs"):
        _settings({"e": {"source": SMOL_SOURCE, "fewshot_as_multiturn": True}})


def test_plan_shares_weights_and_keeps_raw_paths(tmp_path):
    from llmboard.workflow.plan import build_plan

    models = {
        "smol": {"source": SMOL_SOURCE},
        "smol-chat": {"source": SMOL_SOURCE, "chat_template": True},
        "smol-sys": {"source": SMOL_SOURCE, "chat_template": True, "system_instruction": "A"},
    }
    plan = build_plan(_settings(models), REPO / "tasks", root=tmp_path)
    key = plan.keys["smol"]
    # one checkpoint folder and one model folder, named by the first entry
    assert {plan.model_dir(m) for m in models} == {f"resources/models/smol/{key}"}
    assert {plan.checkpoint_dir(m) for m in models} == {f"resources/checkpoints/smol/{key}"}
    # raw prompts: the paths predictions always had; the others: their own
    files = {m: plan.prediction_file(m, "fp32", "arc_easy", 0) for m in models}
    assert files["smol"].startswith(f"results/predictions/smol/{key}/fp32/arc_easy/")
    assert len({plan.run_keys[m] for m in models}) == 3
    assert plan.prompting_labels() == {
        "smol": "raw",
        "smol-chat": "chat+multiturn",
        "smol-sys": Prompting(True, "A", True).label,
    }
    # a changed system instruction moves that entry's files only
    models["smol-sys"]["system_instruction"] = "B"
    again = build_plan(_settings(models), REPO / "tasks", root=tmp_path)
    for m in models:
        same = again.prediction_file(m, "fp32", "arc_easy", 0) == files[m]
        assert same == (m != "smol-sys"), m
    # trust_remote_code decides conversion: such an entry gets its own folders
    models["smol-trc"] = {"source": SMOL_SOURCE, "trust_remote_code": True}
    third = build_plan(_settings(models), REPO / "tasks", root=tmp_path)
    assert third.model_dir("smol-trc") == f"resources/models/smol-trc/{key}"


def test_bad_chat_template_is_named_before_any_job(tokenizer_dir, tmp_path):
    """A tokenizer without a template, or a name it does not carry: an error naming the
    entry when the plan is built (from the GGUF header or the tokenizer folder)."""
    from llmboard.workflow.plan import build_plan

    src = save_tiny("llama", tmp_path / "tiny", tokenizer_dir)  # SmolLM2's tokenizer, no template
    cases = [
        ({"tiny": {"source": str(src), "chat_template": True}}, r"models\.tiny .*no chat template"),
        (
            {"smol": {"source": SMOL_SOURCE, "chat_template": "tool_use"}},
            r"models\.smol .*no template named 'tool_use'; the tokenizer has \['default'\]",
        ),
    ]
    for models, message in cases:
        with pytest.raises(SettingsError, match=message):
            build_plan(_settings(models), REPO / "tasks", root=tmp_path)
    build_plan(
        _settings({"smol": {"source": SMOL_SOURCE, "chat_template": "default"}}),
        REPO / "tasks",
        root=tmp_path,
    )


# ------------------------------------------------------------------ against lm-eval, with the model
def _lmeval_run(lm, cfg: dict, limit: int, prompting: Prompting) -> dict:
    """lm-eval's simple_evaluate (its fewshot_random_seed default, 1234) on task ``cfg``."""
    import lm_eval

    name = cfg["task"]
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=[lmeval_task(cfg)],
        log_samples=True,
        limit=limit,
        apply_chat_template=prompting.chat_template is not False,
        fewshot_as_multiturn=prompting.fewshot_as_multiturn,
        system_instruction=prompting.system_instruction,
    )
    return {"results": out["results"][name], "samples": out["samples"][name]}


@pytest.fixture(scope="module")
def engines(smol_dir):
    from llmboard.inference.engine import TransformersLM
    from llmboard.inference.loading import load_model
    from lmeval_oracle import lmeval_model

    model, tok, context = load_model(smol_dir, "fp32")
    return (
        TransformersLM(model, tok, token_budget=1024),
        context,
        lmeval_model(str(smol_dir), batch_size=8),
    )


def _predict(engines, task, prompting, tmp_path, n_shards: int, order) -> pl.DataFrame:
    """Our predictions, shard by shard (last first), as inference jobs write them."""
    from llmboard.inference.predictions import predict_shard

    lm, context, _ = engines
    chat = renderer(lm.tokenizer, prompting.chat_template) if prompting.chat_template else None
    frames = []
    for s in order:
        info = predict_shard(
            lm,
            context,
            task,
            s,
            n_shards,
            tmp_path / f"{s}.parquet",
            tmp_path / f"{s}.json",
            seed=1234,
            prompting=prompting,
            chat=chat,
        )
        assert info["prompting"] == {**prompting.as_dict(), "label": prompting.label}
        frames.append(pl.read_parquet(tmp_path / f"{s}.parquet"))
    return pl.concat(frames).sort("doc_id", "choice")


def _compare_lls(df: pl.DataFrame, ref: dict, task, tol=1e-4, rel=1e-5) -> dict:
    """Same contexts, log-likelihoods within the raw oracle's tolerance, same is_greedy and
    the same accuracy; returns what was measured."""
    from llmboard.tasks.metrics import per_doc_metrics

    theirs = per_request_from_samples(ref["samples"])
    contexts = {
        (int(s["doc_id"]), j): tuple(a)
        for s in ref["samples"]
        for j, a in enumerate(s["arguments"])
    }
    assert len(theirs) == df.height
    worst = 0.0
    for r in df.iter_rows(named=True):
        key = (r["doc_id"], r["choice"])
        assert contexts[key] == (r["context"], r["continuation"]), key
        ll, greedy = theirs[key]
        worst = max(worst, abs(r["loglikelihood"] - ll))
        assert abs(r["loglikelihood"] - ll) <= max(tol, rel * abs(ll)), (
            key,
            r["loglikelihood"],
            ll,
        )
        assert r["is_greedy"] == greedy, key
    ours = per_doc_metrics(df)
    acc = {}
    for metric in task.metrics:
        acc[metric] = sum(ours[metric]) / len(ours[metric])
        assert acc[metric] == pytest.approx(ref["results"][f"{metric},none"], abs=1e-12)
    print(f"{task.name}: {df.height} requests, max |dLL| {worst:.2e}, {acc}")
    return {"requests": df.height, "max_dll": worst, **acc}


@pytest.mark.slow
@pytest.mark.parametrize(
    "how,n_shots,limit",
    [("chat+system", 0, 24), ("chat+multiturn", 25, 6), ("chat+system", 25, 3)],
)
def test_arc_easy_chat_loglikelihoods_equal_lmevals(how, n_shots, limit, engines, tmp_path):
    """ARC-Easy with SmolLM2's chat template: 0-shot with a system instruction, and 25-shot
    drawn at random from its own validation split, sharded in 3, as turns and collapsed."""
    prompting = PROMPTINGS[how]
    task, cfg = lmeval_arc(tmp_path / "lmeval", limit=limit, n_shots=n_shots)
    ref = _lmeval_run(engines[2], cfg, limit, prompting)
    df = _predict(engines, task, prompting, tmp_path, 3, order=[2, 0, 1])
    _compare_lls(df, ref, task)


@pytest.mark.slow
def test_mmlu_five_shot_raw_equals_lmevals(engines, tmp_path):
    """MMLU anatomy, 5 examples first_n from the dev split, raw prompts."""
    task, cfg = lmeval_mmlu(tmp_path / "lmeval", limit=12, n_shots=5)
    ref = _lmeval_run(engines[2], cfg, 12, Prompting())
    df = _predict(engines, task, Prompting(), tmp_path, 2, order=[1, 0])
    _compare_lls(df, ref, task)


@pytest.mark.slow
def test_gsm8k_chat_generations_equal_lmevals(engines, smol_tok, tmp_path):
    """gsm8k_cot with the chat template, exemplars as turns: lm-eval's own task and ``hf``
    model; the same prompts, the same generated texts."""
    from llmboard.inference.engine import GenerationRequest

    lm, _, hflm = engines
    prompting = PROMPTINGS["chat+multiturn"]
    task, docs, lt = lmeval_generation(
        "gsm8k_cot", tmp_path, 5, prompting, hflm.apply_chat_template
    )
    reqs = build_generation_requests(
        task, docs, list(range(len(docs))), prompting, renderer(smol_tok, True)
    )
    insts = sorted(lt.instances, key=lambda i: i.doc_id)
    assert [i.args[0] for i in insts] == [r["context"] for r in reqs]
    ours = lm.generate_until(
        [GenerationRequest(r["context"], tuple(r["until"]), r["max_gen_toks"]) for r in reqs]
    )
    hflm.batch_size_per_gpu = len(insts)
    theirs = hflm.generate_until(insts, disable_tqdm=True)
    same = sum(o.text == t for o, t in zip(ours, theirs))
    print(
        f"gsm8k_cot chat: {same} of {len(ours)} generations identical; "
        f"{sum(o.tokens for o in ours)} tokens; e.g. {ours[0].text[:80]!r}"
    )
    assert same == len(ours), [(o.text, t) for o, t in zip(ours, theirs) if o.text != t]


@pytest.mark.slow
def test_two_entries_one_checkpoint_in_the_workflow(tmp_path, smol_dir, tokenizer_dir):
    """The same tiny checkpoint raw and with a chat template: fetched and converted once,
    each entry its own predictions and a prompting column on the boards; a new system
    instruction re-runs that entry only."""
    from workspace import Workspace

    ws = Workspace(tmp_path)
    src = save_tiny("llama", tmp_path / "src", tokenizer_dir)
    shutil.copy(smol_dir / "chat_template.jinja", src / "chat_template.jinja")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    rows = [
        {"q": f"What is {a} plus {a}?", "options": [str(2 * a), "no", str(a)], "gold": 0}
        for a in range(1, 7)
    ]
    write_jsonl(tasks / "add.jsonl", rows)
    (tasks / "add.yaml").write_text(
        'task: add\ndataset: {source: add.jsonl}\ndoc_to_text: "Question: {{q}}\\nAnswer:"\n'
        'doc_to_choice: "{{options}}"\ndoc_to_target: gold\nmetrics: [acc]\n'
        "fewshot: {n: 2, sampler: random}\n"
    )
    config = {
        "models": {
            "tiny": {"source": str(src)},
            "tiny-chat": {"source": str(src), "chat_template": True, "system_instruction": "X"},
        },
        "precisions": ["fp32"],
        "tasks": {"add": {"shards": 2}},
        "tasks_dir": str(tasks),
    }
    ws.write_config(config)
    ws.snakemake()
    assert [p.name for p in (ws.wd / "resources/models").iterdir()] == ["tiny"]
    board = pl.read_parquet(ws.wd / "results/leaderboard.parquet")
    assert dict(board.select("model", "prompting").unique().iter_rows()) == {
        "tiny": "raw",
        "tiny-chat": Prompting(True, "X", True).label,
    }
    csv_head = (ws.wd / "results/leaderboard.csv").read_text()
    assert csv_head.startswith("rank,rank_low,rank_high,tie_group,model,prompting,")
    preds = {
        m: sorted((ws.wd / "results/predictions" / m).rglob("*.parquet")) for m in config["models"]
    }
    chat = pl.read_parquet(preds["tiny-chat"][0])
    assert chat["context"][0].startswith("<|im_start|>system\nX<|im_end|>\n<|im_start|>user\n")
    raw = pl.read_parquet(preds["tiny"][0])
    assert raw["context"][0].startswith("Question: ")
    config["models"]["tiny-chat"]["system_instruction"] = "Y"
    ws.write_config(config)
    planned = ws.planned_jobs()
    rules = sorted(r for r, _ in planned)
    assert "fetch" not in rules and "convert" not in rules
    redone = [out for r, out in planned if r in ("infer", "score")]
    assert redone and all("/tiny-chat/" in out for out in redone)
