"""inference.batch_invariant: a request's numbers do not depend on how it was batched.

The real SmolLM2 on the default board's request types (multiple choice, multiple input,
few-shot, rolling log-likelihood, generation greedy and sampled), in fp32 and bf16, at
three token budgets and as one shard or two: every request's log-likelihood, greedy flag
and generated text identical, bit for bit.
Without the setting the same comparison differs (the packed engine's rows change with
the budget), which is what the setting is for.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmboard.inference import cpu_linear
from llmboard.inference.api import LoadOptions, LoglikelihoodRequest, load_backend
from llmboard.tasks.definitions import load_task
from llmboard.tasks.documents import fewshot_pool, load_docs
from llmboard.tasks.prompts import build_requests, build_rolling_requests

TASKS = Path(__file__).resolve().parent.parent / "tasks"
BUDGETS = (256, 1024, 8192)
# (task file, overrides, documents): multiple choice, multiple input, few-shot
CHOICE_TASKS = [
    ("arc_easy.yaml", None, 16),
    ("winogrande.yaml", None, 16),
    ("mmlu/mmlu_anatomy.yaml", {"num_fewshot": 5}, 6),
]


def _pairs(lm, path, overrides, n):
    task = load_task(TASKS / path, overrides)
    docs = load_docs(task)
    reqs = build_requests(task, docs, range(n), pool=fewshot_pool(task))
    pairs = [lm.tokenize_pair(LoglikelihoodRequest(r["context"], r["continuation"])) for r in reqs]
    # where a second shard would start: the first request of the second half's documents
    cut = next(i for i, r in enumerate(reqs) if r["doc_id"] >= n // 2)
    return pairs, cut


def _layouts(run, items, cut):
    """``run`` over ``items`` at each budget, as one shard and as two."""
    out = {}
    for budget in BUDGETS:
        out[(budget, 1)] = run(items, budget)
        out[(budget, 2)] = run(items[:cut], budget) + run(items[cut:], budget)
    return out


@pytest.fixture(scope="module", params=["fp32", "bf16"])
def engine(request, smol_dir):
    torch.set_num_threads(2)  # the default inference.threads: work split across threads
    lm, _, _ = load_backend(
        "transformers",
        smol_dir,
        request.param,
        # drafts too: their length follows the budget (the rows a step may hold)
        LoadOptions(token_budget=256, batch_invariant=True, draft_tokens=4),
    )
    return request.param, lm


def _loglikelihoods(lm):
    def run(pairs, budget):
        lm.token_budget = budget
        return [(r.loglikelihood, r.is_greedy) for r in lm.loglikelihood_tokens(pairs)]

    return run


@pytest.mark.parametrize("path,overrides,n", CHOICE_TASKS, ids=[t[0] for t in CHOICE_TASKS])
def test_choice_requests_identical_at_every_budget_and_shard_count(engine, path, overrides, n):
    precision, lm = engine
    pairs, cut = _pairs(lm, path, overrides, n)
    got = _layouts(_loglikelihoods(lm), pairs, cut)
    ref = got[(BUDGETS[0], 1)]
    for layout, values in got.items():
        changed = [i for i, (a, b) in enumerate(zip(ref, values)) if a != b]
        assert changed == [], f"{precision} {path} budget/shards {layout}: requests {changed}"
    assert len(ref) == len(pairs)


def test_rolling_requests_identical_at_every_budget_and_shard_count(engine):
    precision, lm = engine
    task = load_task(TASKS / "lambada_rolling.yaml")
    rows = build_rolling_requests(task, load_docs(task), range(8))
    tokens = [lm.tokenize_text(r["text"]) for r in rows]

    def run(token_lists, budget):
        lm.token_budget = budget
        return [r.loglikelihood for r in lm.loglikelihood_rolling_tokens(token_lists, 64)]

    got = _layouts(run, tokens, 4)
    assert all(v == got[(BUDGETS[0], 1)] for v in got.values()), precision


def test_packed_engine_depends_on_the_budget_invariant_mode_stays_close(smol_dir):
    """Why the setting exists: the packed engine's bf16 numbers change with the budget.
    And what it costs in numbers: fp32 within the engine's 1e-4 of the packed engine."""
    torch.set_num_threads(2)
    lm, _, _ = load_backend("transformers", smol_dir, "bf16", LoadOptions(token_budget=256))
    pairs, _ = _pairs(lm, "arc_easy.yaml", None, 16)
    run = _loglikelihoods(lm)
    assert run(pairs, 256) != run(pairs, 8192)
    packed, _, _ = load_backend("transformers", smol_dir, "fp32", LoadOptions(token_budget=2048))
    inv, _, _ = load_backend(
        "transformers", smol_dir, "fp32", LoadOptions(token_budget=2048, batch_invariant=True)
    )
    a = _loglikelihoods(packed)(pairs, 2048)
    b = _loglikelihoods(inv)(pairs, 2048)
    assert max(abs(x[0] - y[0]) for x, y in zip(a, b)) < 1e-4
    assert [x[1] for x in a] == [y[1] for y in b]
    dnn = "-dnn" if cpu_linear.available() else ""  # linear layers through oneDNN
    assert (packed.numerics, inv.numerics) == (f"e1{dnn}", f"e1{dnn}-bi")


def test_setting_reaches_the_engine_and_the_score(tmp_path, smol_dir):
    """config inference.batch_invariant -> the job's load options -> the engine; the
    prediction sidecar and the score's provenance name the numeric form."""
    from llmboard.inference.predictions import predict_shard
    from llmboard.tasks.scoring import score

    lm, _, context = load_backend(
        "transformers", smol_dir, "fp32", LoadOptions(token_budget=512, batch_invariant=True)
    )
    assert lm.batch_invariant
    task = load_task(TASKS / "arc_easy.yaml", {"limit": 4})
    pq, js = tmp_path / "0-of-1.parquet", tmp_path / "0-of-1.json"
    predict_shard(lm, context, task, 0, 1, pq, js, seed=1234)
    assert json.loads(js.read_text())["numerics"] == lm.numerics
    assert lm.numerics.endswith("-bi")
    out = tmp_path / "score.json"
    score([pq], [js], out, model="smol", metrics=task.metrics, primary_metric=task.primary_metric)
    assert json.loads(out.read_text())["provenance"]["numerics"] == [lm.numerics]


def test_generations_identical_at_every_budget_slot_count_and_shard_count(engine):
    """Greedy and seeded sampled texts: the token budget sets the number of slots (2 at
    128, 5 at 512 and 4,096 here) and how many draft tokens a greedy row checks a step
    (none at 128, up to 4 at 4,096), the shards which prompts decode side by side. The
    gsm8k_cot prompts (8 exemplars, ~800 tokens) share their first blocks with each
    other in one shard; the first of them is alone with a short NQ-Open prompt in the
    other layout."""
    from llmboard.inference.api import GenerationRequest, Sampling, sample_seed
    from llmboard.tasks.prompts import build_generation_requests

    precision, lm = engine

    def contexts(name, n):
        task = load_task(TASKS / name)
        docs = load_docs(task)
        return [
            r["context"]
            for r in build_generation_requests(task, docs, range(n), pool=fewshot_pool(task))
        ]

    nq, gsm = contexts("nq_open.yaml", 2), contexts("gsm8k_cot.yaml", 3)
    assert len(lm.tokenize_text(gsm[0])) > 8 * 64  # several whole blocks shared
    sampling = Sampling(temperature=0.8, top_p=0.95, top_k=50, seed=sample_seed(1234, 3, 0))
    requests = [
        GenerationRequest(nq[0], ("\n", "."), 8),
        GenerationRequest(gsm[0], ("Q:",), 8),
        GenerationRequest(nq[1], ("\n", "."), 8),
        GenerationRequest(gsm[1], ("Q:",), 8),
        GenerationRequest(gsm[2], ("Q:",), 8, sampling),
    ]

    def run(reqs, budget):
        lm.token_budget = budget
        return [(g.text, g.tokens, g.stop_reason) for g in lm.generate_until(reqs)]

    got = {}
    for budget in (128, 512, 4096):
        got[(budget, 1)] = run(requests, budget)
        got[(budget, 2)] = run(requests[:2], budget) + run(requests[2:], budget)
    ref = got[(128, 1)]
    for layout, texts in got.items():
        assert texts == ref, f"{precision} budget/shards {layout}"

    # the exemplars' blocks are computed once for the three gsm8k_cot prompts
    from llmboard.inference.invariance import chain_end

    before = lm.stats.get("prefix_tokens", 0)
    run(requests, 4096)
    chains = [chain_end(lm.tokenize_text(c)) for c in gsm]
    computed = lm.stats["prefix_tokens"] - before
    assert max(chains) <= computed < sum(chains) - 2 * 8 * 64
    if precision == "fp32":  # the same texts as the packed engine (one shared prefix)
        lm.batch_invariant = False
        try:
            packed = run(requests, 4096)
        finally:
            lm.batch_invariant = True
        greedy = [i for i, r in enumerate(requests) if r.sampling is None]
        assert [packed[i] for i in greedy] == [ref[i] for i in greedy]


@pytest.mark.parametrize("threads", [2, 16])
@pytest.mark.parametrize("kv", [3, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_block_attention_is_attention_and_a_row_alone_gets_the_same_bits(dtype, kv, threads):
    """generation's attention: softmax(q k^T) v over [shared blocks | own columns] as a
    float64 reference computes it; and each row's output equal, bit for bit, to the row
    computed alone with all its columns its own, whatever the other rows' widths and
    however many leading blocks are read from the one shared copy. Three query rows a
    key head (SmolLM2's, padded to ``MIN_BATCHED_ROWS``), also with a single key head (a
    row alone is then a batch of one matrix) and at 16 threads (MKL's kernel for a
    single matrix of few rows follows the thread count: 28 rows at 16 threads). A row
    with draft tokens queries several positions in one step: each query's output equal
    to the same query alone in a step of one."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _block_attention_rows(dtype, kv)
        _block_attention_drafts(dtype, kv)
    finally:
        torch.set_num_threads(before)


def _block_attention_drafts(dtype, kv: int):
    from llmboard.inference.invariance import BLOCK, block_attention

    gen = torch.Generator().manual_seed(5)
    n, g, d, steps, width = 4, 3, 64, 5, 4 * BLOCK  # 5: a step's token and a draft of 4
    lengths = [70, 200, 129, 191]  # each row's columns, its step's tokens the last five
    q = torch.randn(n, kv, g, steps, d, generator=gen).to(dtype) * 0.125
    k = torch.randn(n, kv, width, d, generator=gen).to(dtype)
    v = torch.randn(n, kv, width, d, generator=gen).to(dtype)
    k[:, :, :BLOCK], v[:, :, :BLOCK] = k[0, :, :BLOCK], v[0, :, :BLOCK]

    def run(rows, at, shared, w):
        """rows' queries at step positions ``at`` (each sees the columns up to its own),
        the first ``shared`` columns read from one copy: [rows, kv, g, len(at), d]."""
        qq = q[rows][:, :, :, at].reshape(len(rows), kv, g * len(at), d)
        last = torch.tensor([[lengths[i] - steps + j for j in at] for i in rows])
        seen = torch.arange(w)[None, None] <= (last - shared)[..., None]
        prefix = (k[0, :, :shared], v[0, :, :shared]) if shared else None
        cols = slice(shared, shared + w)
        out = block_attention(qq, k[rows, :, cols], v[rows, :, cols], seen[:, None], prefix, g)
        return out.view(len(rows), kv, g, len(at), d)

    for shared in (0, BLOCK):
        together = run(list(range(n)), list(range(steps)), shared, width - shared)
        for i in range(n):
            w = -(-(lengths[i] - shared) // BLOCK) * BLOCK
            for j in range(steps):
                alone = run([i], [j], shared, w)[0, :, :, 0]
                assert torch.equal(together[i, :, :, j], alone), (dtype, kv, shared, i, j)


def _block_attention_rows(dtype, kv: int):
    from llmboard.inference.invariance import BLOCK, block_attention

    gen = torch.Generator().manual_seed(3)
    n, g, d, width = 6, 3, 64, 5 * BLOCK
    lengths = [70, 200, 129, 64, 300, 191]  # each row's columns (shared ones included)
    q = torch.randn(n, kv, g, d, generator=gen).to(dtype) * 0.125
    k = torch.randn(n, kv, width, d, generator=gen).to(dtype)
    v = torch.randn(n, kv, width, d, generator=gen).to(dtype)
    k[:, :, :BLOCK], v[:, :, :BLOCK] = k[0, :, :BLOCK], v[0, :, :BLOCK]  # a block all share

    def run(rows, shared, w):
        """rows' attention with the first ``shared`` columns read from one copy and their
        own columns in buffers ``w`` wide (masked past each row's length)."""
        own_k, own_v = k[rows, :, shared : shared + w], v[rows, :, shared : shared + w]
        seen = torch.arange(w)[None] < torch.tensor([lengths[i] - shared for i in rows])[:, None]
        prefix = (k[0, :, :shared], v[0, :, :shared]) if shared else None
        return block_attention(q[rows], own_k, own_v, seen[:, None, None, :], prefix, g)

    def reference(i):
        kk, vv = k[i, :, : lengths[i]].double(), v[i, :, : lengths[i]].double()
        return torch.softmax(q[i].double() @ kk.transpose(-1, -2), -1) @ vv

    alone = [run([i], 0, -(-lengths[i] // BLOCK) * BLOCK)[0] for i in range(n)]
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    for i in range(n):
        assert (alone[i].double() - reference(i)).abs().max() < tol
    for shared, w in ((0, width), (BLOCK, width - BLOCK), (BLOCK, 4 * BLOCK)):
        rows = [i for i in range(n) if lengths[i] - shared <= w]
        together = run(rows, shared, w)
        for j, i in enumerate(rows):
            assert torch.equal(together[j], alone[i]), (dtype, shared, w, i)
