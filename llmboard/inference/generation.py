"""Greedy generation with a shared prefix and slots that refill (continuous batching).

lm-eval's ``hf`` model generates a batch of left-padded prompts with ``model.generate``
and keeps every row running until the slowest one stops; each row recomputes the
few-shot examples that every prompt of the task starts with. Here:

- The longest token prefix that every prompt shares (gsm8k_cot's 8 exemplars, ~730
  tokens) is computed once and read by every row (``prefix.py``: cascade attention).
- Each of ``rows`` slots holds one request: its own prompt tokens and what it has
  generated, in a preallocated key/value buffer. A row that meets a stop string, EOS,
  ``max_gen_toks`` or the model window leaves at once and the next prompt takes its
  slot; nothing waits for the slowest row.
- Batch-invariant engine, greedy rows: a decoding step also checks up to
  ``draft_tokens`` tokens that a row's own context proposes (prompt lookup: what
  followed the last time its latest tokens occurred, in its prompt or its generation),
  when few rows are in flight (a step then costs mostly its weight read, not its rows).
  The model's picks decide, as one token a step would: a draft is kept only as far as
  it equals them, and the row's numbers are those of a step at a time (a row's numbers
  do not depend on the rows computed beside it, its own drafts included: invariance.py).
- Prompts are left-truncated to ``max_length - max_gen_toks`` as lm-eval does; prompt
  chunks go through the model at most ``token_budget`` tokens at a time; out of memory
  halves the slots and resumes the unfinished requests.

The transformers model runs unchanged: its attention layers call ``SlotCache.update``
(the cache interface) and ``prefix.cascade_attention``, which receives the cache
through the forward's keyword arguments.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .api import in_order
from .invariance import BLOCK, canonical_width, chain_end, soft_capped, whole_blocks
from .prefix import cache_arg, cascade, common_prefix, own_forward, prefix_kv

log = logging.getLogger(__name__)

# one row in flight per this many tokens of budget (32 rows at the default 2,048): a
# decoding step reads every weight once for all its rows, so more rows share that read,
# while each row's key/value buffer (prompt + max_gen_toks tokens) costs memory
TOKENS_PER_ROW = 64
# prompt lookup: a row's draft continues the longest of its last NGRAM, ..., 1 tokens
# that occurred before in its context (the most recent occurrence)
NGRAM = 3


class SlotCache:
    """Per-layer key/value buffers [slots, kv_heads, width, d], written at each row's own
    column (rows are at different points of their prompts), plus the shared prefix."""

    def __init__(self, model, slots: int, width: int, dtype, device):
        import torch

        cfg = model.config
        text = getattr(cfg, "text_config", cfg)
        heads = text.num_attention_heads
        kv = getattr(text, "num_key_value_heads", None) or heads
        d = getattr(text, "head_dim", None) or text.hidden_size // heads
        layers = text.num_hidden_layers
        # zeros, not empty: a masked column's probability is 0, but 0 x a NaN left in
        # uninitialised memory is NaN
        self.k = [
            torch.zeros(slots, kv, width, d, dtype=dtype, device=device) for _ in range(layers)
        ]
        self.v = [
            torch.zeros(slots, kv, width, d, dtype=dtype, device=device) for _ in range(layers)
        ]
        self.prefix: list | None = None  # per layer (k, v) [kv, P, d]
        self.rows = None  # slot index of each row of the current forward (None: all slots)
        self.cols = None  # [n, q] columns the current forward writes
        self.width_used = 0  # columns the current forward's attention reads
        self.invariant = False  # attention by block_attention (batch-invariant generation)

    # the cache interface transformers' attention layers call
    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        k, v = self.k[layer_idx], self.v[layer_idx]
        rows = self.rows if self.rows is not None else self._all_rows(k)
        # advanced indices around a slice: the indexed view is [n, q, kv, d]
        k[rows[:, None], :, self.cols] = key_states.transpose(1, 2)
        v[rows[:, None], :, self.cols] = value_states.transpose(1, 2)
        w = self.width_used
        if self.rows is None:
            return k[:, :, :w], v[:, :, :w]
        return k[self.rows, :, :w], v[self.rows, :, :w]

    def compact(self, keep: list[int]) -> None:
        import torch

        idx = torch.tensor(keep, device=self.k[0].device)
        self.k = [k.index_select(0, idx) for k in self.k]
        self.v = [v.index_select(0, idx) for v in self.v]

    def _all_rows(self, k):
        import torch

        return torch.arange(k.shape[0], device=k.device)

    def prefix_for(self, layer_idx):
        return None if self.prefix is None else self.prefix[layer_idx]

    # what transformers may ask of any cache
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.width_used

    def __len__(self):
        return len(self.k)


@dataclass
class _Row:
    index: int  # request index
    ids: list[int]  # the row's own prompt tokens (after the shared prefix)
    max_gen: int
    until: tuple[str, ...]
    written: int = 0  # columns of this row's buffer filled
    generated: list[int] = field(default_factory=list)
    prompt_tokens: int = 0  # the whole prompt, prefix included, after truncation
    sampling: object = None  # api.Sampling, None: greedy
    rng: object = None  # the row's own torch.Generator, seeded by sampling.seed
    lookup: _Lookup | None = None  # drafts from the row's context (greedy rows)


class _Lookup:
    """A row's whole context (prompt, then what it generated) and, for each n-gram of
    up to ``NGRAM`` tokens, where the token after its most recent occurrence sits."""

    def __init__(self, prompt: list[int]):
        self.ctx: list[int] = []
        self.after: list[dict] = [{} for _ in range(NGRAM + 1)]
        for t in prompt:
            self.push(t)

    def push(self, token: int) -> None:
        ctx = self.ctx
        ctx.append(token)
        end = len(ctx) - 1  # the n-grams ending just before the new token lead to it
        for n in range(1, min(NGRAM, end) + 1):
            self.after[n][tuple(ctx[end - n : end])] = end

    def draft(self, k: int) -> list[int]:
        """Up to ``k`` tokens that followed the longest recurring tail of the context."""
        ctx = self.ctx
        for n in range(min(NGRAM, len(ctx)), 0, -1):
            at = self.after[n].get(tuple(ctx[-n:]))
            if at is not None:
                return ctx[at : at + k]
        return []


class _Chains:
    """Batch-invariant prompts' whole blocks (``invariance.chain_end``), computed as the
    engine computes them for log-likelihoods: once for every prompt that starts with
    them (gsm8k_cot's eight exemplars), and kept only while a queued prompt still needs
    them. The blocks every prompt of the call starts with (``shared`` tokens) are one
    prefix that all rows read (``block_attention``); a row starts with the rest of its
    chain copied into its buffer and prefills the rest of its prompt."""

    def __init__(self, lm, prompts):
        from collections import Counter

        self.lm = lm
        self.prompts = prompts
        self.blocks: dict[tuple, list] = {}
        self.uses = Counter(key for p in prompts for key in self._keys(p))
        self.shared = BLOCK * (common_prefix(prompts) // BLOCK)

    @staticmethod
    def _keys(prompt):
        return [tuple(prompt[: j + BLOCK]) for j in range(0, chain_end(prompt), BLOCK)]

    def prefix(self):
        """Per layer (k, v) [kv, shared, d] of the blocks every prompt starts with."""
        if not self.shared:
            return None
        head = self.prompts[0][: self.shared + 1]
        self.lm._compute_blocks([head], self.blocks)
        return self.lm._chain(head, self.shared, self.blocks)

    def load(self, cache: SlotCache, rows: list[tuple[int, _Row]]) -> None:
        fulls = [self.prompts[r.index] for _, r in rows]
        self.lm._compute_blocks(fulls, self.blocks)
        for (slot, r), full in zip(rows, fulls):
            end = chain_end(full)
            for j in range(self.shared, end, BLOCK):
                col = j - self.shared
                for layer, (k, v) in enumerate(self.blocks[tuple(full[: j + BLOCK])]):
                    cache.k[layer][slot, :, col : col + BLOCK] = k
                    cache.v[layer][slot, :, col : col + BLOCK] = v
            for key in self._keys(full):
                self.uses[key] -= 1
                if self.uses[key] <= 0:  # (a retry after out of memory computes it again)
                    self.blocks.pop(key, None)
            r.ids, r.written = full[max(end, self.shared) :], max(end - self.shared, 0)


def _generator(seed: int, device):
    import torch

    g = torch.Generator(device=device if str(device).startswith("cuda") else "cpu")
    g.manual_seed(int(seed))
    return g


def warp(logits, sampling):
    """A row's float32 logits as HF ``generate`` warps them when sampling: temperature,
    then top-k, then top-p (the smallest set of tokens whose probability reaches top_p,
    at least one kept); the others set to -inf."""
    import torch

    x = logits.float() / sampling.temperature
    if sampling.top_k and sampling.top_k < x.shape[-1]:
        kth = torch.topk(x, sampling.top_k).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_x, order = torch.sort(x, descending=False)
        cum = sorted_x.softmax(-1).cumsum(-1)
        drop = cum <= 1 - sampling.top_p
        drop[..., -1] = False
        x = x.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return x


def sample(logits, sampling, rng) -> int:
    """One token from a row's logits, warped (``warp``), drawn from the row's own
    generator."""
    import torch

    probs = warp(logits, sampling).softmax(-1)
    if probs.device.type != rng.device.type:
        probs = probs.to(rng.device)
    return int(torch.multinomial(probs, 1, generator=rng).item())


class Generator:
    """``generate_until`` (greedy, or seeded sampling per request) for one loaded
    transformers model."""

    def __init__(self, lm):
        self.lm = lm
        self.model = lm.model
        self.base = lm.model.get_decoder() if hasattr(lm.model, "get_decoder") else lm.model
        self.head = lm.model.get_output_embeddings()
        cfg = lm.model.generation_config if hasattr(lm.model, "generation_config") else None
        eos = getattr(cfg, "eos_token_id", None)
        eos = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        if lm.tokenizer.eos_token_id is not None:
            eos.add(lm.tokenizer.eos_token_id)
        self.eos_ids = eos
        self.cache_arg = cache_arg(self.base)

    # ------------------------------------------------------------------ driver
    def generate(self, requests, encode) -> list:
        """[GenerationRequest] -> [(text, tokens, stop_reason, prompt_tokens)], in order."""
        import torch

        lm = self.lm
        prompts = [lm.cut_prompt(encode(r.context), r.max_gen_toks) for r in requests]
        alone = [
            i
            for i, (p, r) in enumerate(zip(prompts, requests))
            if lm.beyond_window(len(p) + r.max_gen_toks - 1)
        ]
        if alone:
            return self._with_alone(requests, prompts, alone, encode)
        # prompts are truncated first, so every row starts with the whole shared prefix;
        # batch-invariant: shared in whole blocks instead (where the common prefix ends
        # depends on the other prompts, so a row's numbers must not: block_attention)
        self.chains = _Chains(lm, prompts) if lm.batch_invariant else None
        self.drafting = lm.drafts
        P = self.chains.shared if self.chains else common_prefix(prompts)
        results: dict[int, tuple] = {}
        lm._begin("prompts", len(requests), "generated_tokens")
        rows = max(1, min(len(requests), lm.token_budget // TOKENS_PER_ROW))
        prefix = None
        with torch.inference_mode():
            if self.chains:
                prefix = self.chains.prefix()
            elif P:  # on the model's own causal attention, before the switch to cascade
                prefix = prefix_kv(
                    self.base, prompts[0][:P], chunk=lm.token_budget, device=lm.device
                )
                lm.stats["forward_tokens"] += P
        with torch.inference_mode(), cascade(self.model):
            while len(results) < len(requests):
                pending = [i for i in range(len(requests)) if i not in results]
                try:
                    self._run(requests, prompts, pending, P, prefix, rows, results)
                except torch.OutOfMemoryError:
                    if rows == 1:
                        raise
                    rows //= 2
                    lm.stats["oom_retries"] += 1
                    log.warning("out of memory while generating: %d rows in flight", rows)
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
        if not self.chains:  # (blocks count themselves)
            lm.stats["prefix_tokens"] = lm.stats.get("prefix_tokens", 0) + P
        return [results[i] for i in range(len(requests))]

    def _with_alone(self, requests, prompts, alone: list[int], encode) -> list:
        """The requests that fit the model's sliding window as ever; the others
        (``lm.beyond_window``) one at a time through the model's own attention."""
        self.lm._begin("prompts (past the sliding window)", len(alone), "generated_tokens")
        return in_order(
            len(requests),
            alone,
            lambda i: self._alone(requests[i], prompts[i]),
            lambda rest: self.generate([requests[i] for i in rest], encode),
        )

    def _alone(self, request, prompt: list[int]) -> tuple:
        """One request through the model's own attention and cache, which apply its
        sliding window as transformers does: the prompt ``token_budget`` tokens at a
        time, then a token a step, with a row's picks, draws and stops. Its numbers
        depend on the request alone."""
        import torch
        from transformers import DynamicCache

        lm = self.lm
        row = _Row(0, prompt, request.max_gen_toks, tuple(request.until), prompt_tokens=len(prompt))
        if request.sampling is not None:
            row.sampling, row.rng = request.sampling, _generator(request.sampling.seed, lm.device)
        results: dict[int, tuple] = {}
        ids, cache, fed = prompt, DynamicCache(), 0
        with torch.inference_mode():
            while True:
                last = own_forward(
                    self.base, ids, chunk=lm.token_budget, device=lm.device, cache=cache, fed=fed
                )
                lm.stats["batches"] += -(-len(ids) // lm.token_budget)
                fed += len(ids)
                lm.stats["forward_tokens"] += len(ids)
                head = self.head(last.to(self._head_device(last)))
                self._append([row], [0], soft_capped(head.float(), lm.logit_cap))
                if self._finish([row], 0, results):
                    return results[0]
                ids = [row.generated[-1]]

    # ------------------------------------------------------------------ slots
    def _run(self, requests, prompts, pending, P, prefix, n_slots, results) -> None:
        lm = self.lm
        queue = sorted(pending, key=lambda i: -len(prompts[i]))  # longest first, as lm-eval
        own = {i: prompts[i][P:] if P else prompts[i] for i in queue}
        width = max(len(own[i]) + requests[i].max_gen_toks for i in queue)
        if lm.batch_invariant:  # whole blocks: block_attention reads them a block at a time
            width = whole_blocks(width)
        n_slots = min(n_slots, len(queue))
        cache = SlotCache(self.model, n_slots, width, lm.compute_dtype, lm.device)
        cache.invariant = lm.batch_invariant
        cache.prefix = prefix
        slots: list[_Row | None] = [None] * n_slots
        qi = 0
        while qi < len(queue) or any(slots):
            # refill free slots; their prompts go through in chunks of the token budget.
            # A prompt forward reads every weight as a decoding step does, so slots are
            # refilled a quarter at a time, not one by one as rows finish
            free = sum(r is None for r in slots)
            refill = free >= max(1, n_slots // 4) or free == n_slots
            new = []
            for s in range(n_slots):
                if refill and slots[s] is None and qi < len(queue):
                    i = queue[qi]
                    qi += 1
                    r = requests[i]
                    slots[s] = _Row(i, own[i], r.max_gen_toks, tuple(r.until))
                    slots[s].prompt_tokens = len(prompts[i])
                    if r.sampling is not None:
                        slots[s].sampling = r.sampling
                        slots[s].rng = _generator(r.sampling.seed, lm.device)
                    elif self.drafting:
                        slots[s].lookup = _Lookup(prompts[i])
                    new.append(s)
            if new:
                self._prefill(cache, new, slots, P)
                self._finish_rows(slots, new, P, results)
            active = [s for s in range(n_slots) if slots[s] is not None]
            if not active:
                continue
            if qi == len(queue) and len(active) < n_slots:
                # the queue is empty: keep only the running rows (one copy now), so that
                # each step reads whole buffers instead of copying the rows out of them
                cache.compact(active)
                slots = [slots[s] for s in active]
                n_slots = len(slots)
                active = list(range(n_slots))
            rows = [slots[s] for s in active]
            k = self._draft_length(len(active))
            steps = [[r.generated[-1], *self._draft(r, k, cache)] for r in rows]
            logits = self._forward(cache, active, rows, steps, P, every=True)
            self._verify(slots, active, steps, logits, results)

    def _prefill(self, cache, new: list[int], slots, P) -> None:
        """The new rows' own prompt tokens, a chunk of rows at a time within the budget;
        each row's first generated token comes from its last prompt position."""
        lm = self.lm
        if self.chains is not None:
            self.chains.load(cache, [(s, slots[s]) for s in new])
        chunk: list[int] = []
        used = 0

        def flush():
            if chunk:
                rows = [slots[s] for s in chunk]
                out = self._forward(cache, chunk, rows, [r.ids for r in rows], P)
                self._append(slots, chunk, out)
                lm.stats["forward_tokens"] += sum(len(r.ids) for r in rows)

        if lm.batch_invariant:  # rows of one canonical width per forward, padded to it
            new = sorted(new, key=lambda s: canonical_width(len(slots[s].ids)))
        for s in new:
            n = len(slots[s].ids)
            if lm.batch_invariant:
                n = canonical_width(n)
                if chunk and n != used:
                    flush()
                    chunk, used = [], 0
            if chunk and (len(chunk) + 1) * max(used, n) > lm.token_budget:
                flush()
                chunk, used = [], 0
            chunk.append(s)
            used = max(used, n)
        flush()

    def _forward(self, cache: SlotCache, slot_ids, rows, tokens, P, every=False):
        """One forward of ``tokens[i]`` (right-padded) for each row; returns the logits
        (float32) at each row's last real position, or with ``every`` at all its real
        positions, row after row (a decoding step: a row's last token and its draft)."""
        import torch

        lm = self.lm
        dev = lm.device
        n, q = len(rows), max(len(t) for t in tokens)
        if lm.batch_invariant and q > 1 and not every:  # a prompt: its canonical width
            q = canonical_width(q)
        pad = lm.prefix_token_id
        ids = torch.tensor([t + [pad] * (q - len(t)) for t in tokens], device=dev)
        start = torch.tensor([r.written for r in rows], device=dev)
        cols = start[:, None] + torch.arange(q, device=dev)[None, :]
        cols = cols.clamp(max=cache.k[0].shape[2] - 1)  # padding past a short row's room
        cache.cols = cols
        cache.rows = (
            None
            if n == cache.k[0].shape[0] and slot_ids == list(range(n))
            else (torch.tensor(slot_ids, device=dev))
        )
        width = int(max(r.written for r in rows)) + q
        if lm.batch_invariant:  # whole blocks; columns past a row's own are masked
            width = whole_blocks(width)
        width = min(width, cache.k[0].shape[2])
        cache.width_used = width
        # a query at column c sees the row's columns <= c (its own prompt, causally)
        seen = torch.arange(width, device=dev)[None, None, :] <= cols[:, :, None]
        mask = seen[:, None]  # [n, 1, q, W]
        pos = cols + (P if cache.prefix is not None else 0)  # after the shared prefix
        hidden = self.base(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            use_cache=True,
            **{self.cache_arg: cache},
            llmboard_cache=cache,
        ).last_hidden_state
        lengths = torch.tensor([len(t) for t in tokens], device=hidden.device)
        if every:
            last = hidden[torch.arange(q, device=hidden.device)[None, :] < lengths[:, None]]
        else:
            last = hidden[torch.arange(n, device=hidden.device), lengths - 1]
        for r, t in zip(rows, tokens):
            r.written += len(t)
        lm.stats["batches"] += 1
        return soft_capped(self.head(last.to(self._head_device(last))).float(), lm.logit_cap)

    def _head_device(self, x):
        import torch

        hook = getattr(self.head, "_hf_hook", None)
        where = getattr(hook, "execution_device", None) or self.head.weight.device
        return x.device if torch.device(where).type == "meta" else where

    def _append(self, slots, slot_ids, logits) -> None:
        picks = logits.argmax(dim=-1).tolist()
        for k, (s, t) in enumerate(zip(slot_ids, picks)):
            row = slots[s]
            if row.sampling is not None:
                t = sample(logits[k], row.sampling, row.rng)
            self._push(row, int(t))

    @staticmethod
    def _push(row: _Row, token: int) -> None:
        row.generated.append(token)
        if row.lookup is not None:
            row.lookup.push(token)

    # ------------------------------------------------------------------ drafts
    def _draft_length(self, active: int) -> int:
        """Draft tokens per row this step: as many as keep the step within the rows the
        token budget allows (``TOKENS_PER_ROW``), at most ``draft_tokens``; none while
        the slots are full (a step of many rows costs what its rows compute)."""
        if not self.drafting:
            return 0
        rows = self.lm.token_budget // TOKENS_PER_ROW
        return max(0, min(self.lm.draft_tokens, rows // active - 1))

    def _draft(self, r: _Row, k: int, cache: SlotCache) -> list[int]:
        """A greedy row's draft, no longer than the tokens it may still generate (its
        ``max_gen_toks``, the model window, its buffer)."""
        if r.lookup is None or k <= 0:
            return []
        room = min(
            r.max_gen - len(r.generated),
            self.lm.max_len - r.prompt_tokens - len(r.generated),
            cache.k[0].shape[2] - r.written,
        )
        k = min(k, room - 1)  # the step's own pick comes after the draft
        return r.lookup.draft(k) if k > 0 else []

    def _verify(self, slots, slot_ids, steps, logits, results) -> None:
        """A decoding step's picks, each row's at its last token and its drafts if any
        (``logits``: their rows in order): kept up to the first one its draft did not
        predict (that one included), each checked for a stop as a step at a time would;
        the buffer keeps the columns of the tokens kept. A sampled row (no draft) samples
        its one."""
        picks = logits.argmax(dim=-1).tolist()
        at = 0
        stats = self.lm.stats
        for s, step in zip(slot_ids, steps):
            row = slots[s]
            row.written -= len(step)
            if len(step) > 1:
                stats["drafted_tokens"] = stats.get("drafted_tokens", 0) + len(step) - 1
            for j, pick in enumerate(picks[at : at + len(step)]):
                if row.sampling is not None:  # (no draft: its one token, sampled)
                    pick = sample(logits[at], row.sampling, row.rng)
                self._push(row, pick)
                row.written += 1
                if self._finish(slots, s, results) or (j + 1 < len(step) and step[j + 1] != pick):
                    break
                if j + 1 < len(step):
                    stats["kept_draft_tokens"] = stats.get("kept_draft_tokens", 0) + 1
            at += len(step)

    def _finish_rows(self, slots, slot_ids, P, results) -> None:
        for s in slot_ids:
            if slots[s] is not None:
                self._finish(slots, s, results)

    def _finish(self, slots, s: int, results) -> bool:
        """Whether the row in slot ``s`` stops at its last token (EOS, a stop string,
        ``max_gen_toks``, the model window); if so its result is kept, the slot freed."""
        lm = self.lm
        r = slots[s]
        reason = None
        text = None
        if r.generated[-1] in self.eos_ids:
            reason = "eos"
        else:
            text = lm.tokenizer.decode(r.generated, skip_special_tokens=True)
            if any(u and u in text for u in r.until):
                reason = "until"
            elif len(r.generated) >= r.max_gen:
                reason = "max_gen_toks"
            elif r.prompt_tokens + len(r.generated) >= lm.max_len:
                reason = "window"
        if reason is None:
            return False
        if text is None:
            text = lm.tokenizer.decode(r.generated, skip_special_tokens=True)
        for u in r.until:  # lm-eval: cut at each stop string in turn
            if u:
                text = text.split(u)[0]
        results[r.index] = (text, len(r.generated), reason, r.prompt_tokens)
        lm.stats["generated_tokens"] = lm.stats.get("generated_tokens", 0) + len(r.generated)
        lm._advance(1)
        slots[s] = None
        return True
