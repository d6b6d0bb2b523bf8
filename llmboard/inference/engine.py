"""The transformers backend: ``TransformersLM`` implements ``api.LM`` (lm-evaluation-
harness' model interface, ``loglikelihood`` and ``generate_until``) on a transformers
model, and ``load`` is the backend's loader (``api.BACKENDS["transformers"]``).

Why ``TransformersLM`` is faster than a plain per-request forward pass, with the
same numbers:
- Requests sharing a context are one *tree*: the context tokens once, then each
  continuation's tokens (but its last) as a branch that attends to the context
  and to itself only (a 4-D attention mask and explicit position ids). A
  context shared by four choices is computed once, and one-token continuations
  (MMLU's " A".." D") cost nothing beyond the context.
- Trees are sorted by length and batched by a token budget (rows x padded
  length), so padding is small and the batch fits memory whatever the task.
- The output head runs only on the positions that predict continuation tokens
  (the vocabulary projection is a large share of a small model's FLOPs), and the
  log-softmax is taken in float32 whatever the model dtype.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

from .. import progress
from .api import (
    LM,
    Generation,
    GenerationRequest,
    Loaded,
    LoadOptions,
    Loglikelihood,
    LoglikelihoodRequest,
    RollingLoglikelihood,
    UnsupportedModel,
    in_order,
    rolling_windows,
)
from .cpu_linear import pack_linears, packed_layers
from .invariance import (
    BLOCK,
    SCORE_CHUNK,
    canonical_width,
    chain_end,
    pad_small_linears,
    soft_capped,
)
from .prefix import (
    MIN_SHARED_TOKENS,
    PrefixOnly,
    cache_arg,
    cascade,
    own_forward,
    prefix_groups,
    prefix_kv,
)

log = logging.getLogger(__name__)


# The engine's numeric form (log-prob formula, head dtype, float32 log-softmax): part of
# the request store's key with the weights and precision. Bump it when a change to the
# engine changes numbers, so that stored answers of the old form are not reused.
NUMERICS = "e1"
# linear layers through oneDNN (``cpu_linear``: CPU, fp32/bf16) round differently from
# PyTorch's default kernels; batch-invariant mode (``inference.batch_invariant``)
# computes in another layout: each differs in the last bits, so each is stored apart
ONEDNN_SUFFIX = "-dnn"
INVARIANT_SUFFIX = "-bi"
# a model with a sliding window: requests past it go through the model's own attention
# (before, such requests were refused or, earlier still, computed with full attention:
# answers stored then are not this engine's and must not be served)
WINDOW_SUFFIX = "-sw"


def sliding_window(config) -> int | None:
    """How many tokens a query of the model's sliding-window layers sees (Mistral 7B v0.1,
    Gemma 2 and 3; Qwen2 only where its config turns it on), or of Llama 4's chunked
    layers (a query at a position below the chunk size sees every earlier token); None
    where every layer sees the whole context. ``config``: the text model's."""
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    sliding = window if window and (types is None or "sliding_attention" in types) else None
    chunk = getattr(config, "attention_chunk_size", None)
    chunked = chunk if chunk and types and "chunked_attention" in types else None
    return min((w for w in (sliding, chunked) if w), default=None)


def refuse_unsupported_attention(model) -> None:
    """Attention the engine's kernels do not compute: attention sinks (GPT-OSS's
    ``sinks``), refused before any work."""
    if any(name.endswith(".sinks") for name, _ in model.named_parameters()):
        raise UnsupportedModel(
            f"{type(model).__name__}: attention sinks (its layers' sinks weights) are not "
            "computed by llmboard's engine; its numbers would be wrong"
        )


def split_pair(tokenizer, context: str, continuation: str, prefix_token_id: int):
    """Tokenise as lm-eval does: trailing context whitespace moves to the continuation,
    ``whole = enc(ctx + cont)``, ``cont = whole[len(enc(ctx)):]``; an empty context
    is conditioned on the prefix token (BOS, else EOS). As lm-eval's ``tok_encode``, a
    text that starts with the prefix token's text (a chat template that writes BOS
    itself) is encoded without special tokens."""
    lead = None if prefix_token_id is None else tokenizer.decode(prefix_token_id)
    if context == "":
        cont = encode(tokenizer, continuation, lead)
        return [prefix_token_id], cont
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = encode(tokenizer, context + continuation, lead)
    ctx = encode(tokenizer, context, lead)
    return ctx, whole[len(ctx) :]


def encode(tokenizer, text: str, lead: str | None = None) -> list[int]:
    # the tokenizer's own add_special_tokens default (BOS for Llama-2-style
    # tokenizers, nothing for GPT-2-style), except when the text already has it:
    # ``lead`` (default: the BOS text, as lm-eval's tok_batch_encode for generation)
    bos = tokenizer.bos_token if lead is None else lead
    if bos and text.startswith(bos):
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(text)


@dataclass
class _Tree:
    ctx: list[int]
    conts: list[list[int]]
    req_ids: list[int]
    tokenised_ctx_len: int  # before truncation to the window

    @property
    def length(self) -> int:
        return len(self.ctx) + sum(len(c) - 1 for c in self.conts)


def _build_trees(
    pairs: list[tuple[list[int], list[int]]], max_len: int, adjacent_only: bool = False
) -> list[_Tree]:
    """Requests with the same context are one tree. ``adjacent_only`` (invariant mode):
    only runs of consecutive requests (a document's choices), since a branch's place in
    its row, and so its last bits, depends on the branches before it: two documents
    with the same context must not make a tree that one shard of them would not."""
    trees: dict[tuple, _Tree] = {}
    run, previous = 0, None
    for i, (ctx, cont) in enumerate(pairs):  # (continuations checked non-empty by the caller)
        if adjacent_only and ctx != previous:
            run, previous = run + 1, ctx
        key = (run, tuple(ctx)) if adjacent_only else tuple(ctx)
        t = trees.setdefault(key, _Tree(list(ctx), [], [], len(ctx)))
        t.conts.append(list(cont))
        t.req_ids.append(i)
    out = []
    for t in trees.values():
        # keep the model's window: drop context from the left as lm-eval does
        excess = t.length - max_len
        if excess > 0:
            if excess >= len(t.ctx):
                raise ValueError(f"continuations alone exceed the model window ({max_len} tokens)")
            t.ctx = t.ctx[excess:]
        out.append(t)
    return out


class TransformersLM(LM):
    def __init__(
        self,
        model,
        tokenizer,
        *,
        token_budget: int,
        progress_every: float = 30.0,
        min_row: int = 0,
        min_shared: float = MIN_SHARED_TOKENS,
        batch_invariant: bool = False,
        onednn: bool = True,
        draft_tokens: int = 0,
    ):
        import torch

        self.model = model
        self.tokenizer = tokenizer
        self.token_budget = token_budget
        self.progress_every = progress_every
        # where inputs go: the first module's device (weights offloaded to disk sit on
        # "meta" until accelerate's hooks bring them in; then inputs stay on the CPU)
        self.device = next(
            (p.device for p in model.parameters() if p.device.type != "meta"),
            torch.device("cpu"),
        )
        # a multimodal model's text settings are its text config's (Gemma 3's, Llama 4's)
        cfg = model.config.get_text_config(decoder=True)
        self.max_len = (
            getattr(cfg, "max_position_embeddings", None)
            or getattr(cfg, "n_positions", None)
            or 2048
        )
        self.prefix_token_id = (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        )
        self.compute_dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
        refuse_unsupported_attention(model)
        self.attention_window = sliding_window(cfg)
        self.logit_cap = getattr(cfg, "final_logit_softcapping", None)  # Gemma 2
        # every weight on the CPU (none on a GPU, none offloaded to run elsewhere)
        self.on_cpu = all(p.device.type == "cpu" for p in model.parameters())
        self.bool_mask = getattr(model.config, "_attn_implementation", None) == "sdpa"
        # rows are at least this wide so that short trees share a row (less padding)
        self.min_row = min_row
        # a prefix shorter than this is not worth a pass of its own (math.inf: never
        # share, how benchmarks time the engine without prefix sharing)
        self.min_shared = min_shared
        # a request's numbers independent of its batch, budget and shard (docs/engine.md):
        # log-likelihoods take ``_invariant_loglikelihoods``, which shares prefixes in
        # whole blocks instead of ``_prefix_groups``' split where the documents decide
        self.batch_invariant = batch_invariant
        # generation: tokens a greedy row's own context proposes for each decoding step
        # to check (batch-invariant engine only: generation.Generator); texts unchanged
        self.draft_tokens = draft_tokens
        # drafts where nothing checks they keep a step's numbers (a GPU): only for the GPU
        # check, which measures whether drafted texts equal a token a step's there
        self.unchecked_drafts = False
        # linear layers on the CPU through oneDNN with reordered weights (cpu_linear):
        # a decoding step's few rows 1.7x faster in fp32; it changes the model in place,
        # so a model packed by an earlier engine stays packed (and its numerics say so)
        self.onednn_linears = pack_linears(model) if onednn else packed_layers(model)
        if batch_invariant:
            pad_small_linears(model)
        self.stats = {
            "requests": 0,
            "forward_tokens": 0,
            "padded_tokens": 0,
            "batches": 0,
            "oom_retries": 0,
        }
        self._torch = torch
        self._generator = None

    # ------------------------------------------------------------ loglikelihood
    @property
    def drafts(self) -> bool:
        """Whether greedy rows take draft tokens (generation.Generator): only where a row's
        numbers are checked not to depend on the rows beside it, its own draft's among
        them, i.e. the batch-invariant engine on the CPU (invariance.py). On a GPU the
        kernels' choice by shape is not checked (the GPU check's row 9 measures how far
        invariance gets there), so rows decode a token a step."""
        checked = self.on_cpu or self.unchecked_drafts
        return self.batch_invariant and self.draft_tokens > 0 and checked

    @property
    def numerics(self) -> str:
        return (
            NUMERICS
            + (ONEDNN_SUFFIX if self.onednn_linears else "")
            + (INVARIANT_SUFFIX if self.batch_invariant else "")
            + (WINDOW_SUFFIX if self.attention_window else "")
        )

    def tokenize_pair(self, request: LoglikelihoodRequest) -> tuple[list[int], list[int]]:
        return split_pair(
            self.tokenizer, request.context, request.continuation, self.prefix_token_id
        )

    # ------------------------------------------------------------ progress
    def _begin(self, unit: str, total: int, counter: str = "forward_tokens") -> None:
        """A call's progress (``llmboard.progress``): ``total`` units, tokens counted by
        ``stats[counter]``."""
        self._progress = [unit, 0, total, counter, self.stats.get(counter, 0)]
        progress.report(unit, 0, total, 0)

    def _advance(self, n: int) -> None:
        p = self._progress
        p[1] += n
        progress.report(p[0], p[1], p[2], self.stats.get(p[3], 0) - p[4])

    def cut_prompt(self, ids: list[int], max_gen_toks: int) -> list[int]:
        """A generation prompt as the model sees it: lm-eval's left truncation to its last
        ``max_length - max_gen_toks`` tokens."""
        if max_gen_toks <= 0:
            raise ValueError(f"max_gen_toks must be positive, got {max_gen_toks}")
        keep = self.max_len - max_gen_toks
        if keep <= 0:
            raise ValueError(
                f"max_gen_toks {max_gen_toks} leaves no room for the prompt in the "
                f"model window ({self.max_len} tokens)"
            )
        return ids[-keep:]

    def beyond_window(self, seen: int) -> bool:
        """Whether a request whose last position sees ``seen`` tokens (a pair's tokens
        less its last, at most the model window; a prompt as ``cut_prompt`` cuts it plus
        ``max_gen_toks`` less one) reaches past the model's sliding window: the engine's
        own attention sees every earlier token, so such a request goes through the
        model's own attention, alone (``_loglikelihood_alone``, ``Generator``)."""
        return bool(self.attention_window) and seen > self.attention_window

    def loglikelihood_tokens(self, pairs) -> list[Loglikelihood]:
        self.stats["requests"] += len(pairs)
        for i, (_, cont) in enumerate(pairs):  # (numbered as the caller's requests)
            if not cont:
                raise ValueError(f"request {i}: empty continuation after tokenisation")
        self._begin("requests", len(pairs))
        alone = [
            i
            for i, (c, t) in enumerate(pairs)
            if self.beyond_window(min(len(c) + len(t) - 1, self.max_len))
        ]
        return in_order(
            len(pairs),
            alone,
            lambda i: self._loglikelihood_alone(*pairs[i]),
            lambda rest: self._loglikelihood_pairs([pairs[i] for i in rest]),
        )

    def _loglikelihood_alone(self, ctx: list[int], cont: list[int]) -> Loglikelihood:
        """One request through the model's own attention and cache, which apply its
        sliding window as transformers does (the engine's trees and shared prefixes do
        not), ``token_budget`` tokens at a time; lm-eval's left truncation to the model
        window. Its numbers depend on the request alone, as in batch-invariant mode."""
        ids = (ctx + cont)[-(self.max_len + 1) :][:-1]
        with self._torch.inference_mode():
            hidden = own_forward(
                self.model.base_model,
                ids,
                chunk=self.token_budget,
                device=self.device,
                last=len(cont),
            )
        self.stats["forward_tokens"] += len(ids)
        self.stats["padded_tokens"] += len(ids)  # positions through the model: no padding
        self.stats["batches"] += -(-len(ids) // max(self.token_budget, 1))
        lp, greedy = self._score_positions(hidden, self._torch.tensor(cont))
        self._advance(1)
        return Loglikelihood(float(lp.sum()), bool(greedy.all()), len(ctx), len(cont))

    def _loglikelihood_pairs(self, pairs) -> list[Loglikelihood]:
        """Pairs the engine's own attention computes: trees, shared prefixes, blocks."""
        trees = _build_trees(pairs, self.max_len, adjacent_only=self.batch_invariant)
        results: list[Loglikelihood | None] = [None] * len(pairs)
        if self.batch_invariant:
            self._invariant_loglikelihoods(trees, results)
            return results  # type: ignore[return-value]
        # contexts that start with the same tokens (few-shot examples, a description, a
        # system prompt) compute them once per group; each tree then holds its own tokens
        for shared, members in self._prefix_groups(trees):
            group = [trees[i] for i in members]
            if not shared:
                self._loglikelihood_trees(group, results, None, 0)
                continue
            with self._torch.inference_mode():
                prefix = prefix_kv(
                    self.model.base_model,
                    group[0].ctx[:shared],
                    chunk=self.token_budget,
                    device=self.device,
                )
            self.stats["forward_tokens"] += shared
            self.stats["prefix_tokens"] = self.stats.get("prefix_tokens", 0) + shared
            for t in group:
                t.ctx = t.ctx[shared:]
            with cascade(self.model):
                self._loglikelihood_trees(group, results, prefix, shared)
            del prefix
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------ invariant mode
    def _invariant_loglikelihoods(self, trees: list[_Tree], results: list) -> None:
        """Batch-invariant log-likelihoods with prompt prefixes shared in whole blocks.

        A tree's context up to ``S`` = the last multiple of BLOCK before its last
        token is a chain of BLOCK-token blocks; block j's keys and values depend on
        the tokens up to its end only (it attends to blocks 0..j-1 and itself), so two
        prompts that start alike share their first blocks, computed once, wherever the
        prompts sit and whatever else runs: vLLM's prefix caching, for numbers that do not
        move. The rest of the tree (its last context tokens and the branches) is one row
        of ``canonical_width``, attending to its own chain. Trees are taken in token order
        (prompts that share blocks are neighbours), WINDOW at a time, so that only the
        blocks the next trees can use are kept."""
        order = sorted(range(len(trees)), key=lambda i: trees[i].ctx)
        blocks: dict[tuple, list] = {}  # chain (tokens to the block's end) -> [(k, v)] per layer
        t0 = time.monotonic()
        for w in range(0, len(order), self.INVARIANT_WINDOW):
            window = [trees[i] for i in order[w : w + self.INVARIANT_WINDOW]]
            self._compute_blocks([t.ctx for t in window], blocks)
            with self._torch.inference_mode():
                self._invariant_trees(window, blocks, results)
            nxt = order[w + self.INVARIANT_WINDOW : w + self.INVARIANT_WINDOW + 1]
            first = trees[nxt[0]].ctx if nxt else []
            blocks = {k: v for k, v in blocks.items() if tuple(first[: len(k)]) == k}
            log.info(
                "loglikelihood (invariant): %d/%d contexts, %.1f s",
                min(w + self.INVARIANT_WINDOW, len(order)),
                len(order),
                time.monotonic() - t0,
            )

    INVARIANT_WINDOW = 64  # trees whose blocks are held at once

    def _chain(self, ctx: list[int], end: int, blocks: dict) -> list:
        """Per layer (k, v) [kv, end, d] of the blocks of ``ctx`` up to ``end``."""
        torch = self._torch
        parts = [blocks[tuple(ctx[: j + BLOCK])] for j in range(0, end, BLOCK)]
        return [
            (torch.cat([p[i][0] for p in parts], dim=1), torch.cat([p[i][1] for p in parts], dim=1))
            for i in range(len(parts[0]))
        ]

    def _stacked(self, chains: list[list]):
        """Rows' chains [(k, v) per layer] as per-row prefixes [n, kv, P, d] per layer."""
        torch = self._torch
        return [
            (torch.stack([c[i][0] for c in chains]), torch.stack([c[i][1] for c in chains]))
            for i in range(len(chains[0]))
        ]

    def _compute_blocks(self, contexts: list[list[int]], blocks: dict) -> None:
        """Every block the contexts' chains need and ``blocks`` lacks, depth by depth, rows
        of one depth together (each row attends to its own chain before it)."""
        torch = self._torch
        from .prefix import BlockCapture

        depth = max((chain_end(c) for c in contexts), default=0)
        for start in range(0, depth, BLOCK):
            need = {}
            for c in contexts:
                key = tuple(c[: start + BLOCK])
                if chain_end(c) > start and key not in blocks:
                    need.setdefault(key, c)
            keys = list(need)
            per_batch = max(1, self.token_budget // (start + BLOCK))
            for b in range(0, len(keys), per_batch):
                batch = keys[b : b + per_batch]
                ids = torch.tensor([list(k[start:]) for k in batch], device=self.device)
                prefix = (
                    self._stacked([self._chain(list(k), start, blocks) for k in batch])
                    if start
                    else None
                )
                cache = BlockCapture(prefix)
                causal = torch.ones(BLOCK, BLOCK, dtype=torch.bool).tril()
                pos = torch.arange(start, start + BLOCK)[None].expand(len(batch), -1)
                with torch.inference_mode(), cascade(self.model):
                    self.model.base_model(
                        input_ids=ids,
                        attention_mask=causal[None, None]
                        .expand(len(batch), 1, -1, -1)
                        .to(self.device),
                        position_ids=pos.to(self.device),
                        use_cache=True,
                        llmboard_cache=cache,
                        **{cache_arg(self.model.base_model): cache},
                    )
                layers = sorted(cache.keys)
                for r, key in enumerate(batch):
                    blocks[key] = [(cache.keys[i][0][r], cache.keys[i][1][r]) for i in layers]
                self.stats["forward_tokens"] += len(batch) * BLOCK
                self.stats["prefix_tokens"] = (
                    self.stats.get("prefix_tokens", 0) + len(batch) * BLOCK
                )
                self.stats["batches"] += 1

    def _invariant_trees(self, trees: list[_Tree], blocks: dict, results: list) -> None:
        """Each tree's rest (after its chain) as one row of its canonical width; rows of
        one (chain length, width) together, within the budget counting the chain."""
        groups: dict[tuple, list] = {}
        for t in trees:
            split = chain_end(t.ctx)
            rest = _Tree(t.ctx[split:], t.conts, t.req_ids, t.tokenised_ctx_len)
            groups.setdefault((split, canonical_width(rest.length)), []).append((t, rest))
        for (split, width), members in sorted(groups.items()):
            i = 0
            while i < len(members):
                n = max(1, min(len(members) - i, self.token_budget // (width + split)))
                batch = members[i : i + n]
                prefix = (
                    self._stacked([self._chain(t.ctx, split, blocks) for t, _ in batch])
                    if split
                    else None
                )
                try:
                    # with a chain: cascade attention over it; without: the model's own
                    with cascade(self.model) if split else contextlib.nullcontext():
                        self._run_batch(
                            [[rest] for _, rest in batch], width, results, prefix, split
                        )
                except self._torch.OutOfMemoryError:
                    if self.token_budget <= width + split:
                        raise
                    self._halve_budget()
                    continue
                i += n
                self._advance(sum(len(t.req_ids) for t, _ in batch))

    def _prefix_groups(self, trees: list[_Tree]) -> list[tuple[int, list[int]]]:
        """``prefix_groups`` of the contexts; besides, a tree longer than the token budget
        runs alone anyway, so its own context (all but the last token) goes through the
        fused causal path ``token_budget`` tokens at a time: no n x n mask, and memory
        bounded by the budget however long the prompt."""
        out = []
        for shared, members in prefix_groups([t.ctx for t in trees], self.min_shared):
            if shared:
                out.append((shared, members))
                continue
            long = {
                i
                for i in members
                if trees[i].length > self.token_budget and len(trees[i].ctx) - 1 >= self.min_shared
            }
            out += [(len(trees[i].ctx) - 1, [i]) for i in sorted(long)]
            rest = [i for i in members if i not in long]
            if rest:
                out.append((0, rest))
        return out

    def _loglikelihood_trees(self, trees, results, prefix, shared) -> None:
        """Fill ``results`` for the requests of ``trees``, batch by batch."""
        torch = self._torch
        trees = sorted(trees, key=lambda t: -t.length)
        n_requests = sum(len(t.req_ids) for t in trees)
        t0 = last = time.monotonic()
        done = 0
        i = 0
        with torch.inference_mode():
            while i < len(trees):
                batch, rows, width = self._pack(trees, i)
                try:
                    self._run_batch(rows, width, results, prefix, shared)
                except torch.OutOfMemoryError:
                    if self.token_budget <= width:
                        raise
                    self._halve_budget()  # and retry the same trees
                    continue
                i += batch
                finished = sum(len(t.req_ids) for row in rows for t in row)
                done += finished
                self._advance(finished)
                now = time.monotonic()
                if now - last >= self.progress_every or i == len(trees):
                    log.info(
                        "loglikelihood: %d/%d requests%s, %.1f s",
                        done,
                        n_requests,
                        f" (after a shared {shared}-token prefix)" if shared else "",
                        now - t0,
                    )
                    last = now

    def _halve_budget(self) -> None:
        """After an out-of-memory error: half the token budget (recorded), memory freed."""
        self.token_budget //= 2
        self.stats["oom_retries"] += 1
        log.warning("out of memory: token budget halved to %d", self.token_budget)
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()

    def _pack(self, trees: list[_Tree], start: int) -> tuple[int, list[list[_Tree]], int]:
        """Pack trees (sorted longest first) into rows of the first tree's length, first fit,
        until rows x width reaches the token budget: padding only fills row ends."""
        width = min(
            max(trees[start].length, self.min_row), max(self.token_budget, trees[start].length)
        )
        max_rows = max(1, self.token_budget // max(width, 1))
        rows: list[list[_Tree]] = []
        free: list[int] = []
        i = start
        while i < len(trees):
            t = trees[i]
            for r, f in enumerate(free):
                if t.length <= f:
                    rows[r].append(t)
                    free[r] -= t.length
                    break
            else:
                if len(rows) == max_rows:
                    break
                rows.append([t])
                free.append(width - t.length)
            i += 1
        return i - start, rows, width

    def _run_batch(
        self, rows: list[list[_Tree]], width: int, results: list, prefix=None, shared: int = 0
    ) -> None:
        torch = self._torch
        n = len(rows)
        ids = torch.zeros((n, width), dtype=torch.long)
        pos = torch.zeros((n, width), dtype=torch.long)
        allowed = torch.zeros((n, width, width), dtype=torch.bool)
        gather_rows, gather_cols, targets, spans = [], [], [], []
        for r, row in enumerate(rows):
            at = 0
            for t in row:
                base = at
                c = len(t.ctx)
                ids[r, base : base + c] = torch.tensor(t.ctx)
                pos[r, base : base + c] = torch.arange(c)
                allowed[r, base : base + c, base : base + c] = torch.ones(
                    c, c, dtype=torch.bool
                ).tril()
                at = base + c
                for cont, rid in zip(t.conts, t.req_ids):
                    k = len(cont) - 1  # the last continuation token is never an input
                    if k:
                        ids[r, at : at + k] = torch.tensor(cont[:-1])
                        pos[r, at : at + k] = torch.arange(c, c + k)
                        allowed[r, at : at + k, base : base + c] = True
                        allowed[r, at : at + k, at : at + k] = torch.ones(
                            k, k, dtype=torch.bool
                        ).tril()
                    # outputs that predict cont[0..]: the last context token, then the branch
                    cols = [base + c - 1] + list(range(at, at + k))
                    spans.append((rid, len(targets), len(cont), t.tokenised_ctx_len))
                    gather_rows += [r] * len(cols)
                    gather_cols += cols
                    targets += cont
                    at += k
                self.stats["forward_tokens"] += t.length
            if at < width:  # padding attends to itself only (a fully masked row gives NaN)
                idx = torch.arange(at, width)
                allowed[r, idx, idx] = True
        self.stats["padded_tokens"] += n * width
        self.stats["batches"] += 1
        dev = self.device
        if prefix is not None:  # cascade attention: the shared prefix, then the trees
            cache = PrefixOnly(prefix)
            hidden = self.model.base_model(
                input_ids=ids.to(dev),
                attention_mask=allowed[:, None].to(dev),
                position_ids=(pos + shared).to(dev),
                use_cache=True,
                llmboard_cache=cache,
                **{cache_arg(self.model.base_model): cache},
            ).last_hidden_state
        else:
            if self.bool_mask:  # sdpa takes True = attend; no additive float mask to build
                mask = allowed[:, None]
            else:
                mask = torch.zeros((n, 1, width, width), dtype=self.compute_dtype)
                mask.masked_fill_(~allowed[:, None], torch.finfo(self.compute_dtype).min)
            hidden = self.model.base_model(
                input_ids=ids.to(dev),
                attention_mask=mask.to(dev),
                position_ids=pos.to(dev),
                use_cache=False,
            ).last_hidden_state
        picked = hidden[
            torch.tensor(gather_rows, device=hidden.device),
            torch.tensor(gather_cols, device=hidden.device),
        ]
        token_lp, greedy = self._score_positions(picked, torch.tensor(targets))
        for rid, start, k, c in spans:
            results[rid] = Loglikelihood(
                float(token_lp[start : start + k].sum()),
                bool(greedy[start : start + k].all()),
                c,
                k,
            )

    def _score_positions(self, picked, tgt, chunk: int = SCORE_CHUNK):
        """log p(target) and is-argmax for each picked hidden state, in float32.

        The vocabulary projection is one matmul (in the model dtype, as lm-eval's
        logits are); the float32 cast, max and log-sum-exp then run chunk by chunk,
        in place, so each [chunk, vocab] block is reused while it is in cache
        instead of streaming [positions, vocab] through memory several times.
        """
        torch = self._torch
        head = self.model.get_output_embeddings()
        cap = self.logit_cap
        # an offloaded head's weight is on "meta": its accelerate hook moves the input to
        # where the head runs, so the input goes to the head's execution device when known
        hook = getattr(head, "_hf_hook", None)
        where = getattr(hook, "execution_device", None) or head.weight.device
        if torch.device(where).type != "meta":
            picked = picked.to(where)
        lps, greedies = [], []
        n_picked = picked.shape[0]
        if self.batch_invariant and n_picked % chunk:  # whole chunks: the same kernels always
            pad = picked.new_zeros(chunk - n_picked % chunk, picked.shape[1])
            picked = torch.cat([picked, pad])
            tgt = torch.cat([tgt, tgt.new_zeros(pad.shape[0])])
        all_logits = head(picked)
        tgt = tgt.to(all_logits.device)
        for s in range(0, picked.shape[0], chunk):
            # a copy for 16-bit models; for fp32 a view, changed in place below
            # (each row is used once)
            logits = soft_capped(all_logits[s : s + chunk].float(), cap)
            t = tgt[s : s + chunk]
            tgt_logit = logits.gather(1, t[:, None])[:, 0]
            # max over a dim returns the first maximal index, as argmax does: greedy
            # iff that is the target (lm-eval's argmax == target), in the same pass
            top, arg = logits.max(dim=-1)
            # log p = (logit - max) - log(sum(exp(logits - max))): log_softmax's own
            # form. logit - logsumexp (both ~30) would lose ~1e-6 per token to fp32
            # rounding, ~1e-4 over a sentence: more than an fp32 model's own error.
            lse = logits.sub_(top[:, None]).exp_().sum(dim=-1).log_()
            lps.append((tgt_logit - top) - lse)
            greedies.append(arg == t)
        return torch.cat(lps)[:n_picked].cpu(), torch.cat(greedies)[:n_picked].cpu()

    # ------------------------------------------------------------ loglikelihood_rolling
    @property
    def max_length(self) -> int:
        return self.max_len

    def tokenize_text(self, text: str) -> list[int]:
        # lm-eval's tok_encode: the tokenizer's own special tokens, none when the text
        # starts with the prefix token's text
        lead = None if self.prefix_token_id is None else self.tokenizer.decode(self.prefix_token_id)
        return encode(self.tokenizer, text, lead)

    def loglikelihood_rolling_tokens(
        self, token_lists: list[list[int]], window: int
    ) -> list[RollingLoglikelihood]:
        """lm-eval's ``loglikelihood_rolling`` on token ids: each text is cut into
        ``rolling_windows`` of at most ``window`` tokens, every window is one row of a plain
        causal forward (transformers' own causal attention, no mask: the windows are
        disjoint, so no tree is needed), rows right-padded and packed longest first up to
        ``token_budget`` padded tokens; a text's log-likelihood is the sum of its windows'
        (each window's sum in float32, as lm-eval's)."""
        torch = self._torch
        self.stats["requests"] += len(token_lists)
        rows = []  # (text index, input ids, scored tokens)
        for i, toks in enumerate(token_lists):
            for ctx, cont in rolling_windows(list(toks), self.prefix_token_id, window):
                rows.append((i, (ctx + cont)[:-1], cont))
        rows.sort(key=lambda r: -len(r[1]))
        self._begin("windows", len(rows))
        sums = [[] for _ in token_lists]
        t0 = last = time.monotonic()
        start = 0
        with torch.inference_mode():
            while start < len(rows):
                width = len(rows[start][1])
                n = max(1, min(len(rows) - start, self.token_budget // max(width, 1)))
                if self.batch_invariant:  # rows of one canonical width, whatever the budget
                    width = canonical_width(width)
                    n = max(1, min(n, self.token_budget // width))
                    while canonical_width(len(rows[start + n - 1][1])) != width:
                        n -= 1
                batch = rows[start : start + n]
                try:
                    lls = self._rolling_batch(batch, width)
                except torch.OutOfMemoryError:
                    if n == 1:
                        raise
                    self._halve_budget()  # and retry the same windows
                    continue
                for (i, _, _), ll in zip(batch, lls):
                    sums[i].append(ll)
                start += n
                self._advance(n)
                now = time.monotonic()
                if now - last >= self.progress_every or start == len(rows):
                    log.info(
                        "loglikelihood_rolling: %d/%d windows, %.1f s", start, len(rows), now - t0
                    )
                    last = now
        return [
            RollingLoglikelihood(float(sum(s)), len(toks), len(s))
            for s, toks in zip(sums, token_lists)
        ]

    def _rolling_batch(self, batch, width: int) -> list[float]:
        """One forward over right-padded windows; each window's log-likelihood."""
        torch = self._torch
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        gather_rows, gather_cols, targets, spans = [], [], [], []
        for r, (_, inp, cont) in enumerate(batch):
            ids[r, : len(inp)] = torch.tensor(inp)
            k = len(cont)
            # outputs at positions len(inp) - k .. len(inp) - 1 predict cont
            gather_rows += [r] * k
            gather_cols += range(len(inp) - k, len(inp))
            spans.append((len(targets), k))
            targets += cont
            self.stats["forward_tokens"] += len(inp)
        self.stats["padded_tokens"] += len(batch) * width
        self.stats["batches"] += 1
        # no attention mask: causal attention alone; padding sits after every real token
        hidden = self.model.base_model(input_ids=ids.to(self.device), use_cache=False)
        hidden = hidden.last_hidden_state
        picked = hidden[
            torch.tensor(gather_rows, device=hidden.device),
            torch.tensor(gather_cols, device=hidden.device),
        ]
        del hidden
        tgt = torch.tensor(targets)
        step = max(self.token_budget, 1)  # the output head a budget of positions at a time
        lps = torch.cat(
            [
                self._score_positions(picked[s : s + step], tgt[s : s + step])[0]
                for s in range(0, len(targets), step)
            ]
        )
        return [float(lps[s : s + k].sum()) for s, k in spans]

    # ------------------------------------------------------------ generation
    def generate_until(self, requests: list[GenerationRequest]) -> list[Generation]:
        """Greedy generation as lm-eval's ``hf`` model does it (the tokenizer's EOS is a
        stop too; the text is cut at the first stop string), with the prompts' shared
        prefix computed once and rows refilled as they finish (``generation.Generator``)."""
        from .generation import Generator

        if not requests:
            return []
        self.stats["requests"] += len(requests)
        if self._generator is None:
            self._generator = Generator(self)
        eos = self.tokenizer.eos_token_id
        if eos is not None:  # lm-eval's handle_stop_sequences: the EOS text is a stop too
            eos_text = self.tokenizer.decode([eos], skip_special_tokens=False)
            requests = [
                r
                if eos_text in r.until
                else GenerationRequest(r.context, (*r.until, eos_text), r.max_gen_toks, r.sampling)
                for r in requests
            ]
        out = self._generator.generate(requests, self.tokenize_prompt)
        return [Generation(text, n, reason, prompt) for text, n, reason, prompt in out]

    def tokenize_prompt(self, text: str) -> list[int]:
        # lm-eval's tok_batch_encode: the tokenizer's special tokens unless the text
        # starts with the BOS text (tok_encode for log-likelihoods checks the prefix token)
        return encode(self.tokenizer, text)


def load(model_dir, precision: str, options: LoadOptions) -> Loaded:
    """The transformers backend's loader (``api.BACKENDS``): the model on the devices the
    job holds, at ``precision``, wrapped in the engine."""
    from .loading import load_model

    model, tokenizer, context = load_model(
        model_dir,
        precision,
        device_map=options.device_map,
        max_memory=options.max_memory,
        offload_folder=options.offload_folder,
        trust_remote_code=options.trust_remote_code,
    )
    return Loaded(engine_for(model, tokenizer, options), tokenizer, context)


def engine_for(model, tokenizer, options: LoadOptions, **engine) -> TransformersLM:
    """The engine a job wraps its loaded model in (``load``), for benchmarks too that load
    a model once and time the job's engine on it; ``engine``: TransformersLM's own knobs
    (``progress_every``, ...)."""
    return TransformersLM(
        model,
        tokenizer,
        token_budget=options.token_budget,
        batch_invariant=options.batch_invariant,
        draft_tokens=options.draft_tokens,
        **engine,
    )
