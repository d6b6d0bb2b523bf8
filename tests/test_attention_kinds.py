"""Models whose attention or head differs from Llama's: what the engine computes as
transformers does (Gemma 2's final logit soft-capping, in scores and in samples) and what
it refuses with the config field that says why, instead of numbers that would be wrong
(soft-capped attention scores; a request longer than a sliding attention window)."""

from __future__ import annotations

import pytest
import torch
from test_engine import REQUESTS, ll_pairs, plain
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


def test_soft_capped_attention_scores_are_refused(tok):
    model = make_tiny_model("gemma2")  # Gemma 2's own default: attn_logit_softcapping 50
    with pytest.raises(UnsupportedModel, match="attn_logit_softcapping: 50"):
        TransformersLM(model, tok, token_budget=512)


def test_a_request_longer_than_the_sliding_window_is_refused(tok):
    """Mistral with a 24-token window: requests the window covers get transformers'
    numbers and texts; a longer one is a user error naming the window, before any work."""
    model = make_tiny_model("mistral", sliding_window=24)
    lm = TransformersLM(model, tok, token_budget=512)
    short = [
        Request("The capital of France is ", "Paris"),
        Request("Pick a letter.\nAnswer:", " B"),
    ]
    ref = plain(model, tok, short, lm.prefix_token_id)
    for (a, ga), (b, gb) in zip(ll_pairs(lm, short), ref):
        assert abs(a - b) < 1e-5 and ga == gb
    long = Request("A much longer context that shares nothing with the others, " * 3, " indeed")
    with pytest.raises(UnsupportedModel, match="sliding_window: 24") as err:
        lm.loglikelihood([*short, long])
    assert isinstance(err.value, USER_ERRORS)  # printed without a traceback

    prompt = "The quick brown fox"
    n = len(encode(tok, prompt))
    ids = torch.tensor([encode(tok, prompt)])
    with torch.inference_mode():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=25 - n, do_sample=False
        )
    (g,) = lm.generate_until([GenerationRequest(prompt, ("\x00never",), 25 - n)])
    assert g.text == tok.decode(out[0, n:].tolist(), skip_special_tokens=True)
    with pytest.raises(UnsupportedModel, match="sliding_window: 24"):
        lm.generate_until([GenerationRequest(prompt, ("\x00never",), 26 - n)])


def test_which_configs_have_a_sliding_window():
    """transformers' own configs, as the docs name them: Mistral 7B v0.1 (4,096), Phi-3
    mini 4k (its config.json's 2,047), Gemma 2 and 3 (their sliding layers); Qwen2 only
    where turned on."""
    from transformers import (
        Gemma2Config,
        Gemma3TextConfig,
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
