"""Models whose attention or head differs from Llama's: what the engine computes as
transformers does (Gemma 2's soft-capped attention scores and final logits; requests
past a sliding window, through the model's own attention: in scores, texts and samples)
and what it refuses with the weights that say why, instead of numbers that would be
wrong (attention sinks)."""

from __future__ import annotations

import pytest
import torch
from test_engine import MIXED_REQUESTS, REQUESTS, ll_pairs, plain
from test_generation_engine import SHARED, plain_generate, requests
from test_sampling import PROMPTS, assert_transformers_draws
from transformers import AutoTokenizer

from llmboard.errors import USER_ERRORS
from llmboard.inference.api import GenerationRequest
from llmboard.inference.engine import LoglikelihoodRequest as Request
from llmboard.inference.engine import TransformersLM, UnsupportedModel, encode

from conftest import make_tiny_model


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def capped(tok):
    """Gemma 2 with a small final soft-cap (1.0: every logit squeezed into [-1, 1], so
    scores and samples differ from the uncapped model's) and full attention scores."""
    return make_tiny_model("gemma2", attn_logit_softcapping=None, final_logit_softcapping=1.0)


def test_final_logit_softcapping_in_log_likelihoods(capped, tok):
    ref = plain(capped, tok, REQUESTS, TransformersLM(capped, tok, token_budget=64).prefix_token_id)
    for invariant in (False, True):
        lm = TransformersLM(capped, tok, token_budget=512, batch_invariant=invariant)
        for (a, ga), (b, gb) in zip(ll_pairs(lm, REQUESTS), ref):
            assert abs(a - b) < 1e-5 and ga == gb, invariant


def test_final_logit_softcapping_in_samples(capped, tok):
    """Seeded samples are transformers' own draws from the capped distribution (the
    uncapped one draws other tokens from the same seeds)."""
    assert_transformers_draws(TransformersLM(capped, tok, token_budget=512))


@pytest.fixture(scope="module")
def attention_capped():
    """Gemma 2 with soft-capped attention scores (``attn_logit_softcapping``: 0.5, small
    enough that every score is squeezed: its logits are not the uncapped model's)."""
    model = make_tiny_model("gemma2", attn_logit_softcapping=0.5, final_logit_softcapping=None)
    uncapped = make_tiny_model("gemma2", attn_logit_softcapping=None, final_logit_softcapping=None)
    ids = torch.arange(100, 140)[None]
    with torch.inference_mode():
        assert not torch.allclose(model(ids).logits, uncapped(ids).logits, atol=1e-2)
    return model


@pytest.mark.parametrize("invariant", [False, True])
def test_soft_capped_attention_scores_in_log_likelihoods(attention_capped, tok, invariant):
    """Every attention path of the engine caps the scores as Gemma 2's eager attention
    does: trees, shared prefixes (packed: one prefix for all rows; invariant: chains of
    whole blocks), rows without one."""
    model = attention_capped
    lm = TransformersLM(model, tok, token_budget=256, batch_invariant=invariant)
    ref = plain(model, tok, MIXED_REQUESTS, lm.prefix_token_id)
    got = ll_pairs(lm, MIXED_REQUESTS)
    assert lm.stats["prefix_tokens"] >= 64  # the shared examples went through cascade
    for (a, ga), (b, gb) in zip(got, ref):
        assert abs(a - b) < max(1e-5, 1e-6 * abs(b)) and ga == gb, invariant


@pytest.mark.parametrize("invariant", [False, True])
def test_soft_capped_attention_scores_in_generation(attention_capped, tok, invariant):
    """Seeded samples are transformers' draws, from prompts with a prefix of more than a
    block (106 tokens: a shared prefix read by cascade attention, or by the invariant
    engine's ``block_attention`` a block at a time) and from short ones; greedy texts
    are transformers' own (the invariant engine with draft tokens). The tiny model's
    greedy texts are the same token over and over, capped or not: the draws are what
    tells the two apart."""
    model = attention_capped
    eos_text = tok.decode([tok.eos_token_id], skip_special_tokens=False)
    reqs = requests(prefix=SHARED * 3, until=("Q:",), max_gen=16)
    want = [plain_generate(model, tok, r.context, r.until, 16, eos_text) for r in reqs]
    lm = TransformersLM(model, tok, token_budget=512, batch_invariant=invariant, draft_tokens=4)
    assert [g.text for g in lm.generate_until(reqs)] == want
    assert lm.stats["prefix_tokens"] >= 64
    assert_transformers_draws(lm, [r.context for r in reqs[:4]])
    assert_transformers_draws(lm)


@pytest.fixture(scope="module")
def windowed():
    """Mistral with a 24-token sliding window (transformers applies it: past 24 tokens
    its logits are not full attention's, which the engine would compute)."""
    model = make_tiny_model("mistral", sliding_window=24)
    ids = torch.arange(100, 140)[None]
    full = make_tiny_model("mistral", sliding_window=None)
    with torch.inference_mode():
        a, b = model(ids).logits[0], full(ids).logits[0]
    assert torch.equal(a[:24], b[:24]) and not torch.allclose(a[24:], b[24:], atol=1e-3)
    return model


def hf_pair(model, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
    """transformers' own log-likelihood of ``cont`` after ``ctx`` (its masks apply the
    model's sliding window)."""
    with torch.inference_mode():
        lp = torch.log_softmax(model(torch.tensor([ctx + cont])[:, :-1]).logits.float(), -1)
    lp = lp[0, len(ctx) - 1 :]
    tgt = torch.tensor(cont)
    return float(lp.gather(1, tgt[:, None]).sum()), bool((lp.argmax(-1) == tgt).all())


LONG = "A much longer context that shares nothing with the others, " * 4


@pytest.mark.parametrize("invariant", [False, True])
def test_requests_past_the_sliding_window_are_transformers(windowed, tok, invariant):
    """Requests the window covers go through the engine; one that reaches past it
    (from its last covered position on) goes alone through the model's own attention,
    which applies the window: log-likelihoods, greedy texts and seeded draws are
    transformers' own, beside requests inside the window, and a request's numbers are
    the same alone or among others."""
    model = windowed
    lm = TransformersLM(model, tok, token_budget=16, batch_invariant=invariant, draft_tokens=4)
    words = encode(tok, LONG)
    pairs = [
        (words[:23], words[23:25]),  # 24 tokens fed: the window's last position
        (words[:24], words[24:26]),  # 25: one past
        (words[:30], words[30:31]),
        (words[:3], words[3:40]),  # a long continuation, 39 fed (three budget chunks)
        (words[:5], words[5:6]),
    ]
    got = lm.loglikelihood_tokens(pairs)
    for (c, t), g in zip(pairs, got):
        want, greedy = hf_pair(model, c, t)
        assert abs(g.loglikelihood - want) < 1e-5 and g.is_greedy == greedy
        assert (g.context_tokens, g.continuation_tokens) == (len(c), len(t))
    (alone,) = lm.loglikelihood_tokens([pairs[1]])
    assert alone.loglikelihood == got[1].loglikelihood  # bit for bit
    with pytest.raises(ValueError, match="request 2: empty continuation"):  # the caller's 2
        lm.loglikelihood_tokens([pairs[1], pairs[0], (words[:5], [])])

    prompts = ["The quick brown fox", LONG]
    reqs = [GenerationRequest(p, ("\x00never",), 30) for p in prompts]  # 34 and 80 reached
    reqs.append(GenerationRequest("The quick brown fox", ("\x00never",), 8))  # inside
    texts = [g.text for g in lm.generate_until(reqs)]
    eos_text = tok.decode([tok.eos_token_id], skip_special_tokens=False)
    want = [plain_generate(model, tok, r.context, r.until, r.max_gen_toks, eos_text) for r in reqs]
    assert texts == want
    assert_transformers_draws(lm, [LONG + p for p in PROMPTS])  # 12 tokens past 24


def test_a_stored_answer_of_another_window_rule_is_not_served(windowed, tok, tmp_path):
    """A windowed model's numerics say how the window is kept (``-sw``): answers that a
    version computing them with full attention stored are not read."""
    from llmboard.inference.engine import WINDOW_SUFFIX
    from llmboard.inference.request_store import RequestStore, StoredLM, request_key

    lm = TransformersLM(windowed, tok, token_budget=512)
    assert lm.numerics.endswith(WINDOW_SUFFIX)
    plain_lm = TransformersLM(
        make_tiny_model("mistral", sliding_window=None), tok, token_budget=512
    )
    assert not plain_lm.numerics.endswith(WINDOW_SUFFIX)
    words = encode(tok, LONG)
    past = (words[:30], words[30:31])
    old = RequestStore(tmp_path, "0" * 64, "fp32", lm.numerics.removesuffix(WINDOW_SUFFIX))
    old.add({request_key(*past): (-1.0, False, 30, 1)})
    (got,) = StoredLM(
        lm, RequestStore(tmp_path, "0" * 64, "fp32", lm.numerics)
    ).loglikelihood_tokens([past])
    assert not got.from_store and abs(got.loglikelihood - hf_pair(windowed, *past)[0]) < 1e-5


def test_a_multimodal_checkpoint_is_read_from_its_text_config(tok):
    """Gemma 3 (image and text): its window and length sit on its text config; requests
    inside the window and past it get transformers' numbers."""
    from transformers import AutoModelForCausalLM, Gemma3Config

    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, head_dim=16)
    heads = dict(num_attention_heads=4, num_key_value_heads=2, vocab_size=49152)
    text = dict(shape, **heads, sliding_window=24, max_position_embeddings=1024)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, image_size=28)
    vision.update(num_attention_heads=2, patch_size=14)
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    lm = TransformersLM(model, tok, token_budget=512)
    assert (lm.attention_window, lm.max_len) == (24, 1024)
    short = [Request("The capital of France is ", "Paris")]
    for (a, ga), (b, gb) in zip(ll_pairs(lm, short), plain(model, tok, short, lm.prefix_token_id)):
        assert abs(a - b) < 1e-5 and ga == gb
    words = encode(tok, LONG)
    past = (words[:25], words[25:27])  # 26 tokens fed: past the window, alone
    (got,) = lm.loglikelihood_tokens([past])
    want, greedy = hf_pair(model, *past)
    assert abs(got.loglikelihood - want) < 1e-5 and got.is_greedy == greedy


def test_attention_sinks_are_refused(tok):
    with pytest.raises(UnsupportedModel, match="attention sinks") as err:
        TransformersLM(make_tiny_model("gpt_oss"), tok, token_budget=512)
    assert isinstance(err.value, USER_ERRORS)  # a user's mistake (its model), not a bug


def test_which_configs_have_a_sliding_window():
    """transformers' own configs, as the docs name them: Mistral 7B v0.1 (4,096), Phi-3
    mini 4k (its config.json's 2,047), Gemma 2 and 3 (their sliding layers), Llama 4 (its
    chunked layers); Qwen2 only where turned on."""
    from transformers import (
        Gemma2Config,
        Gemma3Config,
        Gemma3TextConfig,
        Llama4TextConfig,
        LlamaConfig,
        MistralConfig,
        Phi3Config,
        Qwen2Config,
    )

    from llmboard.inference.engine import sliding_window

    assert sliding_window(MistralConfig()) == 4096
    assert sliding_window(Phi3Config(sliding_window=2047)) == 2047
    assert sliding_window(Gemma2Config()) == sliding_window(Gemma3TextConfig()) == 4096
    assert sliding_window(Qwen2Config(sliding_window=32768, use_sliding_window=False)) is None
    on = dict(sliding_window=4096, use_sliding_window=True, num_hidden_layers=2)
    assert sliding_window(Qwen2Config(**on)) is None  # its layers below max_window_layers
    assert sliding_window(Qwen2Config(**on, max_window_layers=1)) == 4096
    assert sliding_window(LlamaConfig()) is None
    assert sliding_window(MistralConfig(sliding_window=None)) is None  # Mistral 7B v0.3
    # a multimodal model's window is its text config's, where the engine reads it
    assert sliding_window(Gemma3Config()) is None
    assert sliding_window(Gemma3Config().get_text_config(decoder=True)) == 4096
    assert sliding_window(Llama4TextConfig()) == 8192  # its chunked layers' chunk
