"""The generation engine against transformers' own greedy ``generate``, one request at a
time (no padding): shared prefix, refilled slots, stops, truncation, every architecture.
The lm-eval oracle on the real SmolLM2 is tests/test_oracle_generation.py."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch

from llmboard.inference.engine import GenerationRequest, TransformersLM, encode
from llmboard.inference.loading import load_model
from llmboard.inference.prefix import CASCADE, common_prefix
from llmboard.tasks.definitions import load_task
from llmboard.tasks.scoring import compute_score

from conftest import REPO, predict_task

SHARED = "Q: What is two plus two?\nA: Four.\n\nQ: What is the capital of France?\nA: Paris.\n\n"
QUESTIONS = [
    "Q: How many legs does a spider have?\nA:",
    "Q: Which planet is the largest in the solar system?\nA:",
    "Q: What colour is the sky on a clear day?\nA:",
    "Q: Who wrote Hamlet?\nA:",
    "Q: What is the boiling point of water in Celsius?\nA:",
    "Q: How many days are there in a leap year?\nA:",
    "Q: What gas do plants take in?\nA:",
]


def plain_generate(model, tok, context: str, until, max_gen: int, eos_text: str) -> str:
    """transformers' greedy generate for one prompt, cut as lm-eval cuts it."""
    ids = torch.tensor([encode(tok, context)])
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_gen,
            do_sample=False,
            pad_token_id=tok.eos_token_id,
        )
    text = tok.decode(out[0, ids.shape[1] :].tolist(), skip_special_tokens=True)
    for u in [*until, eos_text]:
        text = text.split(u)[0]
    return text


def requests(prefix: str = SHARED, until=("\n\n",), max_gen: int = 24):
    return [GenerationRequest(prefix + q, tuple(until), max_gen) for q in QUESTIONS]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_equals_plain_generate_with_shared_prefix_and_refills(tiny_dirs, arch):
    model, tok, _ = load_model(tiny_dirs[arch], "fp32")
    eos_text = tok.decode([tok.eos_token_id], skip_special_tokens=False)
    reqs = requests(until=("Q:",))
    want = [plain_generate(model, tok, r.context, r.until, r.max_gen_toks, eos_text) for r in reqs]
    # 64 tokens of budget: one row at a time; 192: three slots, refilled as rows finish
    for budget in (64, 192, 2048):
        lm = TransformersLM(model, tok, token_budget=budget)
        got = lm.generate_until(reqs)
        assert [g.text for g in got] == want, (arch, budget)
        assert lm.stats["prefix_tokens"] == common_prefix([encode(tok, r.context) for r in reqs])
        assert lm.stats["prefix_tokens"] > 20  # the shared examples were computed once
        assert all(g.tokens <= 24 and g.context_tokens > 0 for g in got)


def test_without_a_shared_prefix(tiny_dirs):
    model, tok, _ = load_model(tiny_dirs["llama"], "fp32")
    eos_text = tok.decode([tok.eos_token_id], skip_special_tokens=False)
    reqs = [GenerationRequest(q, (".",), 16) for q in ("Hello", "Why is the sky", "12 + 7 =")]
    want = [plain_generate(model, tok, r.context, r.until, 16, eos_text) for r in reqs]
    lm = TransformersLM(model, tok, token_budget=128)
    assert [g.text for g in lm.generate_until(reqs)] == want
    assert lm.stats["prefix_tokens"] == 0


def test_stop_reasons(smol_dir):
    """A stop string, EOS and max_gen_toks each end a row, and say so."""
    model, tok, _ = load_model(smol_dir, "fp32")
    lm = TransformersLM(model, tok, token_budget=512)
    prompt = SHARED + "Q: What is the capital of Italy?\nA:"
    stops = lm.generate_until(
        [
            GenerationRequest(prompt, (".",), 64),  # " Rome." -> cut at "."
            GenerationRequest(prompt, (), 3),  # nothing to meet: ends at max_gen_toks
        ]
    )
    assert stops[0].stop_reason == "until" and "." not in stops[0].text
    assert stops[0].text.strip() and stops[0].tokens < 64
    assert stops[1].stop_reason == "max_gen_toks" and stops[1].tokens == 3
    # SmolLM2's chat turn ends with its EOS (<|im_end|>): a chat prompt stops there
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "Say hi."}], tokenize=False, add_generation_prompt=True
    )
    (g,) = lm.generate_until([GenerationRequest(chat, (), 64)])
    assert g.stop_reason == "eos" and g.tokens < 64 and "<|im_end|>" not in g.text


def test_long_prompt_is_left_truncated_as_lmeval_does(tiny_dirs):
    model, tok, _ = load_model(tiny_dirs["llama"], "fp32")
    lm = TransformersLM(model, tok, token_budget=4096)
    lm.max_len = 64  # the model's window, as lm-eval's max_length
    long = " ".join(f"word{i}" for i in range(200)) + "\nA:"
    ids = encode(tok, long)
    (g,) = lm.generate_until([GenerationRequest(long, (), 8)])
    assert g.context_tokens == 64 - 8  # max_length - max_gen_toks
    # the same as generating from the kept tokens
    short = tok.decode(ids[-(64 - 8) :])
    assert encode(tok, short) == ids[-(64 - 8) :]
    (h,) = lm.generate_until([GenerationRequest(short, (), 8)])
    assert g.text == h.text


def test_bad_max_gen_toks(tiny_dirs):
    model, tok, _ = load_model(tiny_dirs["llama"], "fp32")
    lm = TransformersLM(model, tok, token_budget=256)
    with pytest.raises(ValueError, match="max_gen_toks"):
        lm.generate_until([GenerationRequest("Hi", (), 0)])
    with pytest.raises(ValueError, match="window"):
        lm.generate_until([GenerationRequest("Hi", (), 5000)])


def test_bf16_generates_and_keeps_dtype(tiny_dirs):
    """A bf16 model generates in bf16: every parameter before and after, and every
    floating output of every module during generation (nothing upcast to fp32 on the way:
    embeddings, rotary tables, attention over the key/value buffers, the head)."""
    model, tok, _ = load_model(tiny_dirs["qwen2"], "bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    seen: dict[str, list[torch.dtype]] = {}  # module name -> dtypes of its outputs

    def recorder(name):
        def record(module, args, out):
            for o in out if isinstance(out, (tuple, list)) else (out,):
                if torch.is_tensor(o) and o.is_floating_point():
                    seen.setdefault(name, []).append(o.dtype)

        return record

    hooks = [m.register_forward_hook(recorder(n)) for n, m in model.named_modules()]
    try:
        lm = TransformersLM(model, tok, token_budget=256)
        got = lm.generate_until(requests(max_gen=8))
    finally:
        for h in hooks:
            h.remove()
    assert all(0 < g.tokens <= 8 for g in got)
    assert {d for dtypes in seen.values() for d in dtypes} == {torch.bfloat16}
    head = next(n for n, m in model.named_modules() if m is model.get_output_embeddings())
    assert len(seen[head]) >= 8  # the head ran at every step (in bf16, as all others)
    assert len(seen) > 20  # embeddings, rotary tables, attention, MLPs, norms all seen
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}  # and stays bf16
    assert model.config._attn_implementation != CASCADE  # restored after


def test_gsm8k_cot_predictions_and_score(smol_dir, tmp_path):
    """The pipeline's path: a generation task shard -> one row per document with the raw
    generation -> filters and exact_match at scoring time."""
    task = load_task(REPO / "tasks" / "gsm8k_cot.yaml", {"limit": 3})
    info = predict_task(
        smol_dir,
        "fp32",
        task,
        tmp_path / "p.parquet",
        tmp_path / "p.json",
        token_budget=512,
        batch_invariant=True,
        draft_tokens=4,
    )
    df = pl.read_parquet(tmp_path / "p.parquet")
    assert df["doc_id"].to_list() == [0, 1, 2]
    assert set(df.columns) >= {"context", "generation", "gen_tokens", "stop_reason", "targets"}
    assert df["targets"].to_list()[0] == ["18"]
    assert all(r in ("until", "eos", "max_gen_toks") for r in df["stop_reason"])
    assert info["n_requests"] == 3 and info["engine_stats"]["prefix_tokens"] > 500
    # the sidecar counts the drafts (8 rows a step at this budget: a draft token a row)
    drafted = json.loads((tmp_path / "p.json").read_text())["engine_stats"]
    assert drafted["drafted_tokens"] >= drafted["kept_draft_tokens"] > 0
    score = compute_score(
        [str(tmp_path / "p.parquet")],
        [str(tmp_path / "p.json")],
        model="smol",
        metrics=task.metrics,
        primary_metric=task.primary_metric,
    )
    assert set(score["metrics"]) == {"exact_match,strict-match", "exact_match,flexible-extract"}
    assert score["n"] == 3 and json.loads(json.dumps(score))["primary_metric"] == (
        "exact_match,strict-match"
    )


def test_prompt_lookup_drafts_the_latest_continuation():
    """A draft continues the longest recurring tail (up to NGRAM tokens) from its most
    recent earlier occurrence, and nothing where the tail never occurred."""
    from llmboard.inference.generation import _Lookup

    look = _Lookup([5, 1, 2, 3, 9, 9, 1, 2, 4, 7, 8])
    assert look.draft(4) == []  # 8 occurred nowhere before
    look.push(1)
    assert look.draft(3) == [2, 4, 7]  # "1" last occurred before "2 4 7"
    look.push(2)
    assert look.draft(3) == [4, 7, 8]  # "1 2": the latest of its two occurrences
    look.push(3)
    assert look.draft(5) == [9, 9, 1, 2, 4]  # "1 2 3" (three tokens) beats "2 3"
    assert look.draft(0) == []


def test_rows_draft_only_in_the_invariant_engine_on_the_cpu(tiny_dirs):
    """Drafts where a row's numbers are checked not to depend on its draft's rows: the
    batch-invariant engine with every weight on the CPU; not the packed engine, not on a
    GPU (unless the GPU check asks, to measure it)."""
    model, tok, _ = load_model(tiny_dirs["llama"], "fp32")
    on = dict(token_budget=512, draft_tokens=4)
    assert TransformersLM(model, tok, batch_invariant=True, **on).drafts
    assert not TransformersLM(model, tok, **on).drafts
    assert not TransformersLM(model, tok, token_budget=512, batch_invariant=True).drafts
    gpu = TransformersLM(model, tok, batch_invariant=True, **on)
    assert gpu.on_cpu  # every weight on the CPU
    gpu.on_cpu = False  # as a weight on a GPU (or offloaded, to run elsewhere) makes it
    assert not gpu.drafts
    gpu.unchecked_drafts = True  # the GPU check, which measures drafted texts there
    assert gpu.drafts


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_drafts_keep_the_texts_of_one_token_a_step(smol_dir, precision, monkeypatch):
    """Greedy generation checking prompt-lookup drafts gives what one token a step gives:
    the same text, token count and stop reason, with stops (a stop string, EOS,
    max_gen_toks) met inside a draft the model accepted; sampled rows take no drafts."""
    from llmboard.inference.api import Sampling

    model, tok, _ = load_model(smol_dir, precision)
    # 2,048 tokens: 32 rows a step, so each of the five rows drafts up to 5 tokens
    lm = TransformersLM(model, tok, token_budget=2048, batch_invariant=True)
    count = "Repeat after me forever: red, green, blue, red, green, blue, red, green, blue, red,"
    turn = "<|im_start|>user\nSay: red green blue<|im_end|>\n<|im_start|>assistant\n"
    chat = turn + "red green blue<|im_end|>\n" + turn  # the reply's EOS is in its context
    reqs = [
        GenerationRequest(count, ("blue, red, green, blue",), 48),  # met mid-draft
        GenerationRequest(count, (), 7),  # max_gen_toks mid-draft (one of 5-8 meets it there)
        GenerationRequest(SHARED + QUESTIONS[0], ("\n\n",), 24),
        GenerationRequest(SHARED + QUESTIONS[3], (".",), 24),
        GenerationRequest(count, (), 16, Sampling(temperature=0.7, top_p=0.9, top_k=0, seed=3)),
        GenerationRequest(chat, (), 16),  # EOS mid-draft
        *(GenerationRequest(count, (), n) for n in (5, 6, 8)),
    ]
    stops = stops_within_steps(monkeypatch)

    def run(k):
        lm.draft_tokens = k
        lm.stats.pop("kept_draft_tokens", None)
        stops.clear()
        out = [(g.text, g.tokens, g.stop_reason) for g in lm.generate_until(reqs)]
        return out, lm.stats.get("kept_draft_tokens", 0)

    plain, none = run(0)
    assert none == 0 and set(stops.values()) == {0}
    assert [p[2] for p in plain] == [
        "until",
        "max_gen_toks",
        "until",
        "until",
        "max_gen_toks",
        "eos",
        *["max_gen_toks"] * 3,
    ]
    assert plain[1][1] == 7
    for k in (1, 4, 8):
        drafted, accepted = run(k)
        assert drafted == plain, k
        assert accepted >= (10 if k > 1 else 1), k  # drafts were taken, not just proposed
        if k > 1:  # each kind of stop met at a draft's token, after the step's first
            assert {plain[i][2] for i, j in stops.items() if j > 0} >= {
                "until",
                "max_gen_toks",
                "eos",
            }, (k, stops)


def stops_within_steps(monkeypatch) -> dict:
    """{request index: how many tokens of its last decoding step came before the one it
    stopped at} (0: the step's first token; more: a token of its draft), as generation
    runs."""
    from llmboard.inference.generation import Generator

    stops, starts = {}, {}
    verify, finish = Generator._verify, Generator._finish

    def _verify(self, slots, slot_ids, steps, logits, results):
        starts.clear()
        starts.update({s: len(slots[s].generated) for s in slot_ids})
        return verify(self, slots, slot_ids, steps, logits, results)

    def _finish(self, slots, s, results):
        row, n = slots[s], len(slots[s].generated)
        done = finish(self, slots, s, results)
        if done and s in starts:
            stops[row.index] = n - starts[s] - 1
        return done

    monkeypatch.setattr(Generator, "_verify", _verify)
    monkeypatch.setattr(Generator, "_finish", _finish)
    return stops
