"""Batch invariance (``inference.batch_invariant``): the layout rules that make a
request's numbers independent of the requests beside it, the token budget and the
shard count.

What varies on PyTorch's CPU kernels (measured one op at a time, docs/engine.md):
attention's output for a query changes with the number of key columns of its row and
with where its keys sit (the kernels' blocking and vector tails follow the row); a
product of few rows takes another kernel than a product of many (how few depends on the
kernel, below); a sum over the vocabulary of a single row is split across threads.
Products of more rows, row-wise norms and the rows of one batch are independent of each
other. So in invariant mode:

- every row's width is ``canonical_width`` of its own tokens, and rows share a batch
  (or an attention call) only with rows of the same width;
- prompts share keys and values only in whole ``BLOCK``-token blocks (``chain_end``),
  each block computed from the blocks before it alone;
- linear layers see at least ``MIN_ONEDNN_ROWS`` rows (packed by ``cpu_linear``),
  ``MIN_MKL_ROWS`` (any other on the CPU) or ``MIN_LINEAR_ROWS`` (a GPU's)
  (``pad_small_linears``), and the output head and
  log-softmax whole chunks of ``SCORE_CHUNK`` rows;
- generation's attention (``block_attention``) takes every product in ``BLOCK``-column
  pieces of at least ``MIN_BATCHED_ROWS`` query rows, two matrices or more at a time, so
  that a row reads the prompt blocks every row shares from one copy and its own columns
  from its buffer, and gets the numbers it would get alone.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

ROW_QUANTUM = 16  # rows are a multiple of this wide
BLOCK = 64  # prompts share their keys and values in whole blocks of this many tokens
SCORE_CHUNK = 32
# The fewest rows of a product whose rows equal the same rows of any larger product
# (measured on this CPU, fp32 and bf16, 1 to 16 threads: tests/test_cpu_linear.py and
# tests/test_batch_invariance.py):
# - oneDNN with a reordered weight (cpu_linear) takes a vector kernel for a single row only
MIN_ONEDNN_ROWS = 2
# - MKL's sgemm (a linear layer on the CPU that oneDNN does not pack) splits fewer rows
#   across threads otherwise, and how few grows with the threads: 12 at 2 threads, 28 at 16
MIN_MKL_ROWS = 32
# - a linear layer on a GPU: as the invariant engine has always padded them (the GPU
#   check measures how far the rules get there; kept, so that GPU numbers do not move)
MIN_LINEAR_ROWS = 16
# - a batched matmul of two or more matrices (attention): 4 rows at any thread count; a
#   batch of one matrix is MKL's sgemm above, so block_attention never sends one
MIN_BATCHED_ROWS = 4
PADDED_ATTR = "_llmboard_padded"  # on a padded layer: the rows it computes at least
# Another CPU (a cluster's nodes), library or thread count may switch kernels elsewhere:
# each minimum above is checked on the machine at hand before it is used
# (``verified_rows``), and raised where the check fails. A product of PROBE_ROWS rows is
# the reference; the row counts checked are where kernels were seen to switch, and more.
PROBE_ROWS = 64
PROBE_COUNTS = (2, 3, 4, 5, 8, 11, 12, 16, 17, 27, 28, 33)

_verified: dict = {}  # (what, shape, dtype, threads) -> rows: each probed once a process


def canonical_width(length: int) -> int:
    """A row's width in invariant mode: a function of its own tokens only."""
    return max(1, -(-length // ROW_QUANTUM)) * ROW_QUANTUM


def whole_blocks(length: int) -> int:
    """``length`` rounded up to whole ``BLOCK``s (generation's buffers and attention
    widths: ``block_attention`` reads a block at a time)."""
    return -(-length // BLOCK) * BLOCK


def chain_end(tokens) -> int:
    """Where a prompt's chain of whole ``BLOCK``-token blocks ends: a prompt shares its
    blocks with every prompt that starts alike, and keeps at least its last token for
    itself (the position whose output is read)."""
    return BLOCK * ((len(tokens) - 1) // BLOCK)


def pad_small_linears(model) -> int:
    """Make every ``torch.nn.Linear`` of ``model`` compute at least ``MIN_ONEDNN_ROWS``
    rows if ``cpu_linear`` packed it, ``MIN_MKL_ROWS`` if it computes on the CPU
    otherwise, ``MIN_LINEAR_ROWS`` on a GPU (zeros added, their outputs dropped), so
    that a decoding step of a few rows uses the kernel a large batch uses. Returns the
    number of layers changed."""
    import torch

    from .cpu_linear import PACKED_ATTR

    changed = 0
    for module in model.modules():
        if type(module) is not torch.nn.Linear or getattr(module, PADDED_ATTR, 0):
            continue
        on_cpu = hasattr(module, PACKED_ATTR) or _computes_on_cpu(module)
        minimum = linear_rows(module) if on_cpu else MIN_LINEAR_ROWS
        module.forward = padded(module.forward, minimum)
        setattr(module, PADDED_ATTR, minimum)
        changed += 1
    return changed


def linear_rows(module) -> int:
    """``verified_rows`` for a linear layer computing on the CPU, from
    ``MIN_ONEDNN_ROWS`` if ``cpu_linear`` packed it, else ``MIN_MKL_ROWS`` (once per
    shape, dtype and kernel: the model's layers share a few shapes)."""
    import torch

    from .cpu_linear import PACKED_ATTR

    weight = getattr(module, PACKED_ATTR, None)
    kind, start = ("oneDNN", MIN_ONEDNN_ROWS) if weight is not None else ("MKL", MIN_MKL_ROWS)
    dtype = (weight if weight is not None else module.weight).dtype

    def probe():
        x = torch.randn(PROBE_ROWS, module.in_features, generator=torch.Generator().manual_seed(0))
        return verified_rows(module.forward, x.to(dtype), 0, start, f"{kind} linear")

    return _once((kind, module.in_features, module.out_features, dtype), probe)


def batched_rows(dtype, d: int) -> int:
    """``verified_rows`` for attention's batched products on the CPU (queries against a
    block of keys, a block of probabilities against values; head width ``d``)."""
    import torch

    def probe():
        gen = torch.Generator().manual_seed(0)
        keys = torch.randn(2, d, BLOCK, generator=gen).to(dtype)
        values = torch.randn(2, BLOCK, d, generator=gen).to(dtype)
        q = torch.randn(2, PROBE_ROWS, d, generator=gen).to(dtype)
        p = torch.rand(2, PROBE_ROWS, BLOCK, generator=gen).to(dtype)
        return max(
            verified_rows(lambda x: torch.matmul(x, keys), q, 1, MIN_BATCHED_ROWS, "scores"),
            verified_rows(lambda x: torch.matmul(x, values), p, 1, MIN_BATCHED_ROWS, "values"),
        )

    return _once(("batched", d, dtype), probe)


def _once(key: tuple, probe) -> int:
    """``probe()``'s row minimum, computed once a process per ``key`` and thread count."""
    import torch

    key = (*key, torch.get_num_threads())
    if key not in _verified:
        with torch.inference_mode():
            _verified[key] = probe()
    return _verified[key]


def verified_rows(product, x, dim: int, start: int, what: str) -> int:
    """The fewest rows, from ``start`` and doubled until it holds, from which ``product``
    of the first rows of ``x`` (along ``dim``) gives those rows of ``product(x)`` bit for
    bit, checked at ``PROBE_COUNTS`` on this machine and thread count; PROBE_ROWS if none
    holds (then logged: invariance is not assured)."""
    import torch

    full = product(x)
    least = start
    while least < PROBE_ROWS:
        counts = sorted({least, least + 1, *PROBE_COUNTS} - set(range(least)))
        if all(
            torch.equal(product(x.narrow(dim, 0, r).contiguous()), full.narrow(dim, 0, r))
            for r in counts
            if r < PROBE_ROWS
        ):
            break
        least *= 2
    least = min(least, PROBE_ROWS)
    if least != start:
        log.warning(
            "batch invariance: on this machine a %s product of fewer than %d rows takes "
            "another kernel (%d expected at %d threads); padding to %d%s",
            what,
            least,
            start,
            torch.get_num_threads(),
            least,
            "" if least < PROBE_ROWS else ": a request's numbers may depend on its batch",
        )
    return least


def _computes_on_cpu(module) -> bool:
    """Where a layer computes: accelerate's hook moves its inputs (and offloaded weights)
    to its execution device; else where its weight is."""
    import torch

    hook = getattr(module, "_hf_hook", None)
    where = getattr(hook, "execution_device", None)
    return torch.device(where if where is not None else module.weight.device).type == "cpu"


def padded(forward, minimum: int):
    """``forward`` of a linear layer, computing at least ``minimum`` rows."""

    def padded_forward(x):
        rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
        if rows >= minimum or rows == 0:
            return forward(x)
        out = _rows(x.reshape(rows, x.shape[-1]), forward, 0, minimum)
        return out.reshape(*x.shape[:-1], out.shape[-1])

    return padded_forward


def soft_capped(logits, cap: float | None):
    """``cap * tanh(logits / cap)``, as Gemma 2's forward soft-caps its attention scores
    (``attn_logit_softcapping``, every attention path of the engine: ``block_attention``
    here, ``prefix.cascade_attention``) and its output logits
    (``final_logit_softcapping``: scoring and generation), in float32 (transformers caps
    in the model's dtype, so bf16 differs in the last bits); unchanged where unset.
    Elementwise, so it keeps every layout rule above."""
    import torch

    return torch.tanh(logits / cap) * cap if cap else logits


def block_attention(qg, key, value, mask, prefix, g: int, cap: float | None = None):
    """Attention for grouped queries ``qg`` [n, kv, g*q, d] (scaled) over an optional
    prefix that every row shares (``prefix``: keys, values [kv, P, d], P a multiple of
    BLOCK) followed by each row's own columns ``key``/``value`` [n, kv, W, d] (W a
    multiple of BLOCK), ``mask`` [n, 1, q, W] saying which own columns a query sees;
    scores soft-capped at ``cap`` (``soft_capped``) where the model sets one.

    A row's numbers do not depend on the other rows, on W (columns past its own are
    masked) or on where the shared prefix ends (measured on PyTorch's CPU kernels, fp32
    and bf16, tests/test_batch_invariance.py): every matmul has at least
    ``MIN_BATCHED_ROWS`` query rows in each of two matrices or more on the CPU (fewer
    take another kernel, so the one shared matmul for all rows and a row's own matmul
    agree; ``MIN_LINEAR_ROWS`` on a GPU, as before), the probabilities
    times values are taken one BLOCK of columns at a time (a longer reduction's
    blocking would follow W), and those pieces are added in a pairwise tree over their
    column position (zeros past a row's columns add nothing). Reading the shared prefix
    once for all rows instead of from every row's buffer is the point: with gsm8k_cot's
    eight exemplars it is most of each row's columns."""
    import torch

    n, kv, m, d = qg.shape
    w = key.shape[2]
    least = batched_rows(qg.dtype, d) if qg.is_cpu else MIN_LINEAR_ROWS
    sr = _rows(qg, lambda x: _matmul(x, key.transpose(-1, -2)), 2, least).float()
    sr = soft_capped(sr, cap).contiguous()
    sr.view(n, kv, g, m // g, w).masked_fill_(~mask[:, :, None], float("-inf"))
    if prefix is not None:
        pk, pv = prefix
        plen = pk.shape[1]
        qs = qg.transpose(0, 1).reshape(kv, n * m, d)  # every row against one copy
        sp = _rows(qs, lambda x: _matmul(x, pk.transpose(-1, -2)), 1, least)
        sp = soft_capped(sp.reshape(kv, n, m, plen).transpose(0, 1).float(), cap)
        sr = torch.cat([sp, sr], dim=-1)
    probs = torch.softmax(sr, dim=-1).to(qg.dtype)
    pieces = []
    if prefix is not None:
        nb = plen // BLOCK
        pp = probs[..., :plen].transpose(0, 1).reshape(kv, n * m, nb, BLOCK).transpose(1, 2)
        part = _rows(pp, lambda x: _matmul(x, pv.view(kv, nb, BLOCK, d)), 2, least)
        pieces.append(part.reshape(kv, nb, n, m, d).permute(2, 0, 1, 3, 4))  # [n, kv, nb, m, d]
        probs = probs[..., plen:]
    nb = w // BLOCK
    po = probs.reshape(n, kv, m, nb, BLOCK).transpose(2, 3)  # [n, kv, nb, m, BLOCK]
    pieces.append(_rows(po, lambda x: _matmul(x, value.view(n, kv, nb, BLOCK, d)), 3, least))
    parts = torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0]
    while parts.shape[2] > 1:  # pairs (0, 1), (2, 3), ... whatever the count
        if parts.shape[2] % 2:
            parts = torch.cat([parts, parts.new_zeros(parts[:, :, :1].shape)], dim=2)
        parts = parts[:, :, 0::2] + parts[:, :, 1::2]
    return parts[:, :, 0]


def _rows(x, product, dim: int, minimum: int):
    """``product(x)`` with ``x`` padded with zero rows along ``dim`` to at least
    ``minimum``, the padding's rows dropped from the result."""
    import torch

    rows = x.shape[dim]
    if rows >= minimum:
        return product(x)
    pad = list(x.shape)
    pad[dim] = minimum - rows
    out = product(torch.cat([x, x.new_zeros(pad)], dim=dim))
    return out.narrow(dim, 0, rows)


def _matmul(a, b):
    """``a @ b`` (same batch shapes), on the CPU as a batch of two matrices or more: a
    batch of one is MKL's sgemm, whose kernel for a few rows follows the thread count."""
    import torch

    if not a.is_cpu or (a.dim() > 2 and a.shape[:-2].numel() > 1):
        return torch.matmul(a, b)
    a2, b2 = a.reshape(1, *a.shape[-2:]), b.reshape(1, *b.shape[-2:])
    out = torch.matmul(torch.cat([a2, a2.new_zeros(a2.shape)]), torch.cat([b2, b2]))[0]
    return out.reshape(*a.shape[:-1], out.shape[-1])
