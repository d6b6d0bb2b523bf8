"""Models whose attention or head differs from Llama's: what the engine computes as
transformers does (Gemma 2's soft-capped attention scores and final logits, in scores,
texts and samples) and what it refuses with the config field that says why, instead of
numbers that would be wrong (attention sinks; a request longer than a sliding attention
window)."""

from __future__ import annotations

import pytest
import torch
from test_engine import MIXED_REQUESTS, REQUESTS, ll_pairs, plain
from test_generation_engine import SHARED, plain_generate, requests
from test_sampling import assert_transformers_draws
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


@pytest.mark.parametrize("invariant", [False, True])
def test_a_request_longer_than_the_sliding_window_is_refused(windowed, tok, invariant):
    """Requests the window covers get transformers' numbers and texts, up to the last
    position it covers; one token more is a user error naming the window, before
    anything goes through the model."""
    model = windowed
    lm = TransformersLM(model, tok, token_budget=512, batch_invariant=invariant)
    words = encode(tok, "A much longer context that shares nothing with the others, " * 4)
    fits, past = (words[:23], words[23:25]), (words[:24], words[24:26])  # 24, 25 fed
    short = [Request("The capital of France is ", "Paris")]
    (got,) = [r.loglikelihood for r in lm.loglikelihood_tokens([fits])]
    with torch.inference_mode():
        lp = torch.log_softmax(model(torch.tensor([fits[0] + fits[1]])[:, :-1]).logits, -1)
    want = lp[0, 22:].gather(1, torch.tensor(fits[1])[:, None]).sum()
    assert abs(got - float(want)) < 1e-5
    ref = plain(model, tok, short, lm.prefix_token_id)
    for (a, ga), (b, gb) in zip(ll_pairs(lm, short), ref):
        assert abs(a - b) < 1e-5 and ga == gb
    before = {k: lm.stats.get(k) for k in ("forward_tokens", "batches")}
    with pytest.raises(UnsupportedModel, match="25 tokens .* sliding_window: 24") as err:
        lm.loglikelihood_tokens([fits, past])
    assert isinstance(err.value, USER_ERRORS)  # a user's mistake (its model), not a bug
    assert {k: lm.stats.get(k) for k in before} == before

    prompt = "The quick brown fox"
    n = len(encode(tok, prompt))
    ids = torch.tensor([encode(tok, prompt)])
    with torch.inference_mode():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=25 - n, do_sample=False
        )
    (g,) = lm.generate_until([GenerationRequest(prompt, ("\x00never",), 25 - n)])
    assert g.text == tok.decode(out[0, n:].tolist(), skip_special_tokens=True)
    before = {k: lm.stats.get(k) for k in ("forward_tokens", "batches")}
    with pytest.raises(UnsupportedModel, match="sliding_window: 24"):
        lm.generate_until([GenerationRequest(prompt, ("\x00never",), 26 - n)])
    assert {k: lm.stats.get(k) for k in before} == before


def test_a_stored_answer_past_the_window_is_refused_too(windowed, tok, tmp_path):
    """The request store asks the engine about every request before it serves any: an
    answer stored before (by a version that did not refuse) is not served."""
    from llmboard.inference.request_store import (
        RequestStore,
        StoredLM,
        generation_key,
        request_key,
    )

    lm = TransformersLM(windowed, tok, token_budget=512)
    store = RequestStore(tmp_path, "0" * 64, "fp32", lm.numerics)
    words = encode(tok, "A much longer context that shares nothing with the others, " * 4)
    past = (words[:30], words[30:31])
    store.add({request_key(*past): (-1.0, False, 30, 1)})
    with pytest.raises(UnsupportedModel, match="sliding_window: 24"):
        StoredLM(lm, store).loglikelihood_tokens([past])
    generations = RequestStore(tmp_path, "0" * 64, "fp32", lm.numerics, kind="generation")
    long = GenerationRequest("The quick brown fox", ("\x00never",), 30)
    prompt = lm.tokenize_prompt(long.context)
    generations.add({generation_key(prompt, long): ("stored", 30, "max_gen_toks", len(prompt))})
    with pytest.raises(UnsupportedModel, match="sliding_window: 24"):
        StoredLM(lm, store, generations).generate_until([long])


def test_a_multimodal_checkpoint_is_read_from_its_text_config(tok):
    """Gemma 3 (image and text): its window and length sit on its text config; requests
    inside the window get transformers' numbers, one past it is refused."""
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
    words = encode(tok, "A much longer context that shares nothing with the others, " * 4)
    with pytest.raises(UnsupportedModel, match="sliding_window: 24"):
        lm.loglikelihood_tokens([(words[:25], words[25:26])])  # 25 tokens fed


def test_attention_sinks_are_refused(tok):
    with pytest.raises(UnsupportedModel, match="attention sinks"):
        TransformersLM(make_tiny_model("gpt_oss"), tok, token_budget=512)


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
