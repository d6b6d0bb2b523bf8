"""A prompt prefix that many requests share, computed once and read by all of them.

Few-shot examples, task descriptions, system prompts and chat templates give the prompts
of a task a common start: gsm8k_cot's 8 exemplars (~730 tokens), MMLU's description and
5 examples (~600 tokens before a 60-token question). lm-eval computes that prefix again
for every request. Here it goes through the model once, on transformers' own fused
causal attention and cache, and every later forward attends to its keys and values
through ``cascade_attention``: the softmax runs over [prefix | the row's own tokens]
together, so the numbers are attention's over the whole prompt. Grouped-query heads
read the one shared copy of the prefix (no ``repeat_kv`` copies, no per-row copies).

The transformers model runs unchanged: ``cascade`` switches its attention
implementation to the function registered here, and the cache object passed to the
forward (``update`` is the cache interface its attention layers call) hands the prefix
to the attention function through the forward's keyword arguments.
"""

from __future__ import annotations

import contextlib
import inspect

from .api import UnsupportedModel
from .invariance import block_attention, soft_capped

CASCADE = "llmboard_cascade"
# below this many shared tokens the plain path is as fast, and keeps its numbers
MIN_SHARED_TOKENS = 64


def _lcp(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def common_prefix(seqs: list[list[int]]) -> int:
    """Length of the longest token prefix all sequences share, leaving each at least
    one token of its own (its last token's output predicts what follows)."""
    if not seqs:
        return 0
    own = min(len(s) for s in seqs) - 1
    return max(min([own] + [_lcp(seqs[0], s) for s in seqs[1:]]), 0)


def prefix_groups(
    seqs: list[list[int]], min_shared: float = MIN_SHARED_TOKENS
) -> list[tuple[int, list[int]]]:
    """Partition sequences into groups that each compute one shared prefix once:
    ``[(prefix length, indices)]``, a prefix length of 0 meaning no sharing.

    Sorted, neighbouring sequences' common prefixes form a prefix tree over token ids
    (MMLU subjects under one system prompt: a short prefix shared by all, long ones by
    each subject's prompts). A group's prefix is the shortest common prefix inside it;
    at each level the partition that computes fewer tokens wins: a subtree is one group
    (its prefix computed once for its n sequences saves (n - 1) x prefix tokens) or the
    best partitions of its children. Prefixes under ``min_shared`` tokens do not pay for
    a separate pass and are not shared.
    """
    order = sorted(range(len(seqs)), key=lambda i: seqs[i])
    lcps = [_lcp(seqs[a], seqs[b]) for a, b in zip(order, order[1:])]

    def best(lo: int, hi: int) -> tuple[int, list[tuple[int, list[int]]]]:
        """Tokens saved and groups for the sorted sequences order[lo:hi]."""
        members = order[lo:hi]
        if hi - lo == 1:
            return 0, [(0, members)]
        inner = lcps[lo : hi - 1]
        # each sequence keeps at least one token of its own (its last output is read)
        shared = min(min(inner), min(len(seqs[i]) for i in members) - 1)
        whole = (hi - lo - 1) * shared if shared >= min_shared else 0
        low = min(inner)
        saved, groups, start = 0, [], lo
        for k, v in enumerate(inner, start=lo):
            if v == low:
                s, g = best(start, k + 1)
                saved, groups, start = saved + s, groups + g, k + 1
        s, g = best(start, hi)
        saved, groups = saved + s, groups + g
        if whole >= saved:
            return whole, [(shared if whole else 0, members)]
        return saved, groups

    if not seqs:
        return []
    _, groups = best(0, len(seqs))
    # the unshared ones run together, not one group each
    alone = [i for p, g in groups if p == 0 for i in g]
    shared = [(p, sorted(g)) for p, g in groups if p]
    return shared + ([(0, sorted(alone))] if alone else [])


def cascade_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs
):
    """Attention over [shared prefix | row tokens] for queries [n, heads, q, d].

    ``key``/``value`` are the rows' own [n, kv_heads, W, d] and ``attention_mask``
    [n, 1, q, W] says which of them each query sees (True = attend); the prefix keys
    and values [kv_heads, P, d] are one tensor for all rows.
    """
    import torch

    if kwargs.get("s_aux") is not None:  # (the engine refuses these models when built:
        # engine.refuse_unsupported_attention; this is the backstop)
        raise UnsupportedModel(
            f"{type(module).__name__}: attention sinks are not computed by llmboard's engine"
        )
    cap = kwargs.get("softcap")  # Gemma 2's attn_logit_softcapping, on every score
    cache = kwargs["llmboard_cache"]
    n, heads, q, d = query.shape
    kv = key.shape[1]
    g = heads // kv
    # query head h uses key head h // g (transformers' repeat_kv order); the scale goes
    # on the queries, the smallest operand
    qg = (query * (d**-0.5 if scaling is None else scaling)).reshape(n, kv, g * q, d)
    prefix = cache.prefix_for(module.layer_idx)
    if getattr(cache, "invariant", False):  # generation, batch-invariant
        out = block_attention(qg, key, value, attention_mask, prefix, g, cap)
    elif prefix is None:
        out = _own_rows(qg, key, value, attention_mask, g, cap)
    else:
        sr = _scores(qg, key, attention_mask, g, cap)
        pk, pv = prefix
        if pk.dim() == 4:  # each row its own prefix [n, kv, P, d] (invariant mode)
            plen = pk.shape[2]
            sp = soft_capped(torch.matmul(qg, pk.transpose(-1, -2)).float(), cap)  # [n, kv, g*q, P]
            probs = torch.softmax(torch.cat([sp, sr], dim=-1), dim=-1).to(query.dtype)
            out = torch.matmul(probs[..., :plen], pv) + torch.matmul(probs[..., plen:], value)
        else:
            # one prefix [kv, P, d] for all rows, one softmax over [prefix | row]: few,
            # large operations (each small one costs a thread barrier, which a busy
            # machine makes expensive)
            plen = pk.shape[1]
            qp = qg.transpose(0, 1).reshape(kv, n * g * q, d)
            sp = soft_capped(torch.matmul(qp, pk.transpose(-1, -2)).float(), cap)  # [kv, n*g*q, P]
            sp = sp.view(kv, n, g * q, plen).transpose(0, 1)  # [n, kv, g*q, P]
            probs = torch.softmax(torch.cat([sp, sr], dim=-1), dim=-1).to(query.dtype)
            pp = probs[..., :plen].transpose(0, 1).reshape(kv, n * g * q, plen)
            out = torch.matmul(pp, pv).view(kv, n, g * q, d).transpose(0, 1)
            out = out + torch.matmul(probs[..., plen:], value)
    # [n, kv, g*q, d] -> [n, q, heads, d], as transformers' attention functions return
    return out.reshape(n, heads, q, d).transpose(1, 2).contiguous(), None


def _scores(qg, key, attention_mask, g: int, cap: float | None):
    """Scaled scores [n, kv, g*q, W] of grouped queries against a row's own keys, in
    float32, soft-capped at ``cap`` where set, -inf where ``attention_mask`` [n, 1, q, W]
    says a query does not look."""
    import torch

    n, kv, gq, _ = qg.shape
    w = key.shape[2]
    sr = soft_capped(torch.matmul(qg, key.transpose(-1, -2)).float(), cap)
    sr.view(n, kv, g, gq // g, w).masked_fill_(~attention_mask[:, :, None], float("-inf"))
    return sr


def _own_rows(qg, key, value, attention_mask, g: int, cap: float | None):
    """Attention over a row's own keys only (no shared prefix): [n, kv, g*q, d]."""
    import torch

    probs = torch.softmax(_scores(qg, key, attention_mask, g, cap), dim=-1).to(qg.dtype)
    return torch.matmul(probs, value)


@contextlib.contextmanager
def cascade(model):
    """The model's attention is ``cascade_attention`` inside this block."""
    from transformers import AttentionInterface

    AttentionInterface.register(CASCADE, cascade_attention)
    cfg = model.config
    before = cfg._attn_implementation
    cfg._attn_implementation = CASCADE
    try:
        yield
    finally:
        cfg._attn_implementation = before


def cache_arg(base) -> str:
    """transformers 5.2x renamed the forward's ``past_key_values`` to ``cache``."""
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class PrefixOnly:
    """The cache of a forward whose rows keep nothing: their keys and values go straight
    to attention, next to the shared prefix's."""

    def __init__(self, prefix):
        self.prefix = prefix

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        return key_states, value_states

    def prefix_for(self, layer_idx):
        return None if self.prefix is None else self.prefix[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


class BlockCapture(PrefixOnly):
    """The cache of a forward computing one block of each row's prompt (invariant
    mode): the rows' own prefixes [n, kv, P, d] for attention, and each layer's new keys
    and values kept for the blocks after it."""

    def __init__(self, prefix):
        super().__init__(prefix)
        self.keys: dict[int, tuple] = {}

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        self.keys[layer_idx] = (key_states, value_states)
        return key_states, value_states


def own_forward(
    base, ids: list[int], *, chunk: int, device, cache=None, fed: int = 0, last: int = 1
):
    """Hidden states [last, hidden] of the last ``last`` positions of ``ids`` through the
    model's own causal attention (its masks, its sliding windows) and ``cache`` (a new
    one, or one holding the ``fed`` tokens before them, which it extends), ``chunk``
    tokens at a time: a shared prefix's keys and values (``prefix_kv``), and a request
    the engine's attention would compute wrong (one past a sliding window, which
    transformers' masks apply and the engine's full causal attention does not)."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache() if cache is None else cache
    arg = cache_arg(base)
    out = []
    for start in range(0, len(ids), chunk):
        piece = torch.tensor([ids[start : start + chunk]], device=device)
        pos = torch.arange(fed + start, fed + start + piece.shape[1], device=device)[None]
        hidden = base(input_ids=piece, position_ids=pos, use_cache=True, **{arg: cache})
        if start + chunk > len(ids) - last:  # a piece that holds positions asked for
            out.append(hidden.last_hidden_state[0])
    return torch.cat(out)[-last:]


def prefix_kv(base, ids: list[int], *, chunk: int, device) -> list:
    """Keys and values [kv_heads, P, d] of each layer for the token prefix ``ids``,
    through the model's own causal attention and cache, ``chunk`` tokens at a time."""
    from transformers import DynamicCache

    cache = DynamicCache()
    own_forward(base, ids, chunk=chunk, device=device, cache=cache)
    if hasattr(cache, "layers"):
        kvs = [(layer.keys, layer.values) for layer in cache.layers]
    else:  # transformers < 4.56
        kvs = list(zip(cache.key_cache, cache.value_cache))
    return [(k[0], v[0]) for k, v in kvs]
