"""The engine's tree batching gives a plain forward pass's numbers, on real architectures."""

from __future__ import annotations

import pytest
import torch

from llmboard.inference.engine import GenerationRequest, TransformersLM, split_pair
from llmboard.inference.engine import LoglikelihoodRequest as Request
from llmboard.settings import schema_default

BUDGET = schema_default("inference", "token_budget")
REQUESTS = [
    Request("Question: Which is a fruit?\nAnswer:", " apple"),
    Request("Question: Which is a fruit?\nAnswer:", " a small grey rock by the road"),
    Request("Question: Which is a fruit?\nAnswer:", " car"),
    Request("The capital of France is ", "Paris"),  # trailing space moves to the continuation
    Request("The capital of France is ", "London"),
    Request("", "Hello world"),  # empty context: conditioned on the prefix token
    Request("Pick a letter.\nAnswer:", " A"),
    Request("Pick a letter.\nAnswer:", " B"),
    Request("A much longer context that shares nothing with the others, " * 6, " indeed"),
]


def ll_pairs(lm, requests):
    """(loglikelihood, is_greedy) per request, through the engine's interface."""
    return [(r.loglikelihood, r.is_greedy) for r in lm.loglikelihood(requests)]


def _load(d, dtype=torch.float32):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (
        AutoModelForCausalLM.from_pretrained(d, dtype=dtype).eval(),
        AutoTokenizer.from_pretrained(d),
    )


def plain(model, tok, requests, prefix, softmax_dtype=torch.float32):
    """Reference: one full forward per request, no sharing, no batching."""
    out = []
    with torch.inference_mode():
        for r in requests:
            c, k = split_pair(tok, r.context, r.continuation, prefix)
            x = torch.tensor([c + k])[:, :-1]
            lp = torch.log_softmax(model(x).logits.to(softmax_dtype), -1)[0, len(c) - 1 :]
            tgt = torch.tensor(k)
            out.append(
                (float(lp.gather(1, tgt[:, None]).sum()), bool((lp.argmax(-1) == tgt).all()))
            )
    return out


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_tree_batching_equals_plain_forward(arch, tiny_dirs):
    model, tok = _load(tiny_dirs[arch])
    ref = plain(model, tok, REQUESTS, TransformersLM(model, tok, token_budget=64).prefix_token_id)
    for budget in (64, 512, 8192):
        lm = TransformersLM(model, tok, token_budget=budget)
        got = ll_pairs(lm, REQUESTS)
        for (a, ga), (b, gb) in zip(got, ref):
            assert abs(a - b) < 1e-5 and ga == gb
    # contexts are shared: fewer forward tokens than the requests' total
    total = sum(
        sum(map(len, split_pair(tok, r.context, r.continuation, lm.prefix_token_id)))
        for r in REQUESTS
    )
    assert lm.stats["forward_tokens"] < total - 40


def test_smollm2_tree_equals_plain_and_is_deterministic(smol_dir):
    model, tok = _load(smol_dir)
    lm = TransformersLM(model, tok, token_budget=256)
    ref = plain(model, tok, REQUESTS, lm.prefix_token_id)
    got = ll_pairs(lm, REQUESTS)
    # the oracle tests' tolerance: 1e-4, or 1e-5 x |loglikelihood| for long continuations
    assert all(abs(a - b) < max(1e-4, 1e-5 * abs(b)) for (a, _), (b, _) in zip(got, ref))
    assert [g for _, g in got] == [g for _, g in ref]
    assert ll_pairs(lm, REQUESTS) == got  # same hardware, same numbers


def test_bf16_logsoftmax_in_float32(smol_dir):
    model, tok = _load(smol_dir, torch.bfloat16)
    lm = TransformersLM(model, tok, token_budget=BUDGET)
    res = ll_pairs(lm, REQUESTS[:3])
    # float32 log-softmax: values are not confined to bf16's 8-bit mantissa grid
    assert any(torch.tensor(ll, dtype=torch.bfloat16).float().item() != ll for ll, _ in res)


def test_out_of_memory_halves_budget_and_retries(tiny_dirs, monkeypatch):
    model, tok = _load(tiny_dirs["llama"])
    lm = TransformersLM(model, tok, token_budget=4096)
    ref = ll_pairs(lm, REQUESTS)
    real = lm._run_batch
    calls = {"n": 0}

    def flaky(*args):  # the first batch hits an allocator failure, once
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(*args)

    monkeypatch.setattr(lm, "_run_batch", flaky)
    got = ll_pairs(lm, REQUESTS)
    assert lm.token_budget == 2048 and lm.stats["oom_retries"] == 1
    assert max(abs(a - b) for (a, _), (b, _) in zip(got, ref)) < 1e-5


def test_generate_until_stops_at_stop_string(smol_dir):
    model, tok = _load(smol_dir)
    lm = TransformersLM(model, tok, token_budget=BUDGET)
    [gen] = lm.generate_until([GenerationRequest("The capital of France is", (".",), 12)])
    assert "." not in gen.text and "Paris" in gen.text
    assert gen.stop_reason == "until" and 0 < gen.tokens <= 12


def test_fp32_engine_within_1e4_of_float64_truth(smol_dir):
    """The reference for fp32 rounding: the same requests through a float64 model."""
    from llmboard.tasks.definitions import load_task
    from llmboard.tasks.documents import load_docs
    from llmboard.tasks.prompts import build_requests

    from conftest import REPO

    task = load_task(REPO / "tasks" / "hellaswag.yaml", {"limit": 6})
    rows = build_requests(task, load_docs(task), list(range(6)))
    reqs = [Request(r["context"], r["continuation"]) for r in rows]
    m32, tok = _load(smol_dir)
    lm = TransformersLM(m32, tok, token_budget=512)
    ours = ll_pairs(lm, reqs)
    per_request_fp32 = plain(m32, tok, reqs, lm.prefix_token_id)
    m64, _ = _load(smol_dir, torch.float64)
    truth = plain(
        m64, tok, reqs, TransformersLM(m64, tok, token_budget=512).prefix_token_id, torch.float64
    )
    err_ours = max(abs(a - b) for (a, _), (b, _) in zip(ours, truth))
    err_plain = max(abs(a - b) for (a, _), (b, _) in zip(per_request_fp32, truth))
    print(
        f"max |fp32 - fp64|: tree engine {err_ours:.2e}, plain per-request forward {err_plain:.2e}"
    )
    # fp32 rounding over 30 layers and ~20 tokens; the engine's log-prob form
    # (logit - max) - log-sum-exp is at least as accurate as a per-request log_softmax
    assert err_ours < 1e-4 and err_ours <= 1.5 * err_plain


def test_greedy_is_first_argmax_on_ties(tiny_dirs):
    """lm-eval's is_greedy is ``argmax == target`` and argmax takes the first maximum:
    a target tied with an earlier token is not greedy, an earlier one is."""
    model, tok = _load(tiny_dirs["qwen2"])  # untied head: its rows can be edited alone
    head = model.get_output_embeddings().weight
    picked = torch.randn(4, head.shape[1])
    with torch.no_grad():
        head[3] = picked[0] * 4
        head[7] = picked[0] * 4  # tokens 3 and 7 now tie on the top logit of row 0
    head = head.detach().clone()  # the engine reorders the weight it computes with
    lm = TransformersLM(model, tok, token_budget=BUDGET)
    picked[1:] = picked[0]
    tgt = torch.tensor([7, 3, 5, 7])
    with torch.inference_mode():
        lp, greedy = lm._score_positions(picked, tgt)
        ref = torch.log_softmax((picked @ head.T).double(), -1).gather(1, tgt[:, None])[:, 0]
    assert greedy.tolist() == [False, True, False, False]
    assert torch.allclose(lp.double(), ref, atol=1e-5)


def test_offloaded_output_head_gives_the_same_numbers(tiny_dirs, tmp_path):
    """An untied head offloaded to disk (accelerate puts the last module there first) has
    its weight on "meta": the engine must let accelerate's hook run it."""
    from llmboard.inference.loading import load_model

    d = tiny_dirs["qwen2"]
    model, tok = _load(d)
    ref = ll_pairs(TransformersLM(model, tok, token_budget=512), REQUESTS)
    split, tok, _ = load_model(
        d,
        "fp32",
        device_map={"model": "cpu", "lm_head": "disk"},
        offload_folder=str(tmp_path / "offload"),
    )
    assert split.get_output_embeddings().weight.device.type == "meta"
    got = ll_pairs(TransformersLM(split, tok, token_budget=512), REQUESTS)
    assert max(abs(a - b) for (a, _), (b, _) in zip(got, ref)) < 1e-5
    assert [g for _, g in got] == [g for _, g in ref]


FEWSHOT = "".join(
    f"Question: What is {i} plus {i + 1}?\nA. {i}\nB. {2 * i + 1}\nC. {i + 5}\nD. 0\nAnswer: B\n\n"
    for i in range(5)
)
SHARED_REQUESTS = [
    Request(f"About sums.\n\n{FEWSHOT}Question: What is {j} times 3?\nAnswer:", cont)
    for j in range(6)
    for cont in (" A", " B", " C", " D", f" {3 * j} is three times {j}")
]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_prefix_shared_across_documents_equals_plain_forward(arch, tiny_dirs):
    """Five-shot contexts share ~200 tokens: computed once, then every tree attends to
    them (cascade attention); the numbers are a plain forward pass's."""
    model, tok = _load(tiny_dirs[arch])
    lm = TransformersLM(model, tok, token_budget=256)
    ref = plain(model, tok, SHARED_REQUESTS, lm.prefix_token_id)
    got = ll_pairs(lm, SHARED_REQUESTS)
    assert lm.stats["prefix_tokens"] > 150
    for (a, ga), (b, gb) in zip(got, ref):  # float32 rounding of sums near -100
        assert abs(a - b) < max(1e-5, 1e-6 * abs(b)) and ga == gb
    # the prefix once, not once per document
    assert lm.stats["forward_tokens"] < 6 * 60 + lm.stats["prefix_tokens"]
    assert model.config._attn_implementation != "llmboard_cascade"  # restored


def test_prefix_shared_smollm2_within_engine_tolerance(smol_dir):
    model, tok = _load(smol_dir)
    shared = TransformersLM(model, tok, token_budget=BUDGET)
    got = ll_pairs(shared, SHARED_REQUESTS)
    ref = plain(model, tok, SHARED_REQUESTS, shared.prefix_token_id)
    assert shared.stats["prefix_tokens"] > 150
    # the oracle tests' tolerance: 1e-4, or 1e-5 x |loglikelihood| for long continuations
    assert all(abs(a - b) < max(1e-4, 1e-5 * abs(b)) for (a, _), (b, _) in zip(got, ref))
    assert [g for _, g in got] == [g for _, g in ref]


FEWSHOT_B = "".join(
    f"Question: Name the colour number {i}.\nA. red\nB. blue\nC. green\nD. none\nAnswer: C\n\n"
    for i in range(5)
)
MIXED_REQUESTS = (
    SHARED_REQUESTS
    + [
        Request(f"About colours.\n\n{FEWSHOT_B}Question: Is {j} a colour?\nAnswer:", cont)
        for j in range(4)
        for cont in (" A", " B", " C", " D")
    ]
    + REQUESTS
)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_two_prefixes_in_one_call_each_computed_once(arch, tiny_dirs):
    """Two subjects' few-shot prompts and unrelated requests in one call: each subject's
    prefix is computed once, the rest runs plain, and the numbers are a plain forward's."""
    from llmboard.inference.prefix import prefix_groups

    model, tok = _load(tiny_dirs[arch])
    lm = TransformersLM(model, tok, token_budget=256)
    pairs = [lm.tokenize_pair(r) for r in MIXED_REQUESTS]
    groups = prefix_groups(list({tuple(c): list(c) for c, _ in pairs}.values()))
    assert sorted(len(g) for p, g in groups if p) == [4, 6]  # contexts per subject
    ref = plain(model, tok, MIXED_REQUESTS, lm.prefix_token_id)
    got = ll_pairs(lm, MIXED_REQUESTS)
    assert lm.stats["prefix_tokens"] == sum(p for p, _ in groups)
    for (a, ga), (b, gb) in zip(got, ref):
        assert abs(a - b) < max(1e-5, 1e-6 * abs(b)) and ga == gb


def test_prefix_groups_pick_the_partition_that_computes_least():
    from llmboard.inference.prefix import prefix_groups

    system = list(range(1000, 1070))  # 70 tokens every prompt starts with
    a = system + list(range(300))  # a subject's examples
    b = system + list(range(500, 800))
    seqs = [a + [i] for i in range(5)] + [b + [i, i] for i in range(3)] + [[7, 8, 9]]
    groups = prefix_groups(seqs)
    # two subjects, each its own 370-token prefix, beats one 70-token prefix for all
    assert groups == [(370, [0, 1, 2, 3, 4]), (370, [5, 6, 7]), (0, [8])]
    # one document per subject: only the system prompt is worth sharing
    seqs = [a + [1], b + [2], system + [5, 6]]
    assert prefix_groups(seqs) == [(70, [0, 1, 2])]
    # every sequence keeps a token of its own; under the minimum nothing is shared
    assert prefix_groups([a, a + [1, 2]]) == [(369, [0, 1])]
    assert prefix_groups([[1] * 10 + [2], [1] * 10 + [3]]) == [(0, [0, 1])]
    assert prefix_groups([]) == []


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_prompt_longer_than_the_budget_runs_in_budget_sized_pieces(arch, tiny_dirs):
    """A context longer than the token budget goes through the causal path in pieces of
    the budget, and only its last token and branches through the tree: no forward wider
    than the budget, and a plain forward pass's numbers."""
    model, tok = _load(tiny_dirs[arch])
    lm = TransformersLM(model, tok, token_budget=64)
    reqs = [
        Request(f"Set {j}.\n{FEWSHOT}Question: What is {j} times 3?\nAnswer:", c)
        for j in (1, 2)
        for c in (" A", " B is longer")
    ]
    ref = plain(model, tok, reqs, lm.prefix_token_id)
    got = ll_pairs(lm, reqs)
    for (a, ga), (b, gb) in zip(got, ref):
        assert abs(a - b) < max(1e-5, 1e-6 * abs(b)) and ga == gb
    ctx = [len(lm.tokenize_pair(r)[0]) for r in reqs[::2]]
    assert min(ctx) > 150 and lm.stats["prefix_tokens"] == sum(n - 1 for n in ctx)
    assert lm.stats["padded_tokens"] <= lm.stats["batches"] * 64


def test_smollm2_body_and_head_weights_as_benchmarks_md_counts_them(smol_dir):
    """docs/benchmarks.md bounds the zero-shot MMLU gain over lm-eval (which applies the
    output head at every position) by these counts: (body + head) / body = 1.27."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(smol_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    body = sum(p.numel() for p in model.model.layers.parameters() if p.dim() == 2)
    head = model.lm_head.weight.numel()
    assert (config.num_hidden_layers, round(body / 30 / 1e6, 2)) == (30, 3.54)
    assert round(body / 1e6, 1) == 106.2 and round(head / 1e6, 1) == 28.3
    assert round((2 * body + 2 * head) / (2 * body), 2) == 1.27
