"""Batch invariance (``inference.batch_invariant``): the layout rules that make a
request's numbers independent of the requests beside it, the token budget and the
shard count.

What varies on PyTorch's CPU kernels (measured one op at a time, docs/engine.md):
attention's output for a query changes with the number of key columns of its row and
with where its keys sit (the kernels' blocking and vector tails follow the row); an
fp32 matmul of fewer than about 12 rows takes another kernel; a sum over the vocabulary
of a single row is split across threads. Matmuls of more rows, row-wise norms and the
rows of one batch are independent of each other. So in invariant mode:

- every row's width is ``canonical_width`` of its own tokens, and rows share a batch
  (or an attention call) only with rows of the same width;
- prompts share keys and values only in whole ``BLOCK``-token blocks (``chain_end``),
  each block computed from the blocks before it alone;
- linear layers see at least ``MIN_LINEAR_ROWS`` rows (``pad_small_linears``), and the
  output head and log-softmax whole chunks of ``SCORE_CHUNK`` rows.
"""

from __future__ import annotations

ROW_QUANTUM = 16  # rows are a multiple of this wide
BLOCK = 64  # prompts share their keys and values in whole blocks of this many tokens
SCORE_CHUNK = 32
MIN_LINEAR_ROWS = 16


def canonical_width(length: int) -> int:
    """A row's width in invariant mode: a function of its own tokens only."""
    return max(1, -(-length // ROW_QUANTUM)) * ROW_QUANTUM


def chain_end(tokens) -> int:
    """Where a prompt's chain of whole ``BLOCK``-token blocks ends: a prompt shares its
    blocks with every prompt that starts alike, and keeps at least its last token for
    itself (the position whose output is read)."""
    return BLOCK * ((len(tokens) - 1) // BLOCK)


def pad_small_linears(model) -> int:
    """Make every ``torch.nn.Linear`` of ``model`` compute at least ``MIN_LINEAR_ROWS``
    rows (zeros added, their outputs dropped), so that a decoding step of a few rows
    uses the kernel a large batch uses. Returns the number of layers changed."""
    import torch

    changed = 0
    for module in model.modules():
        if type(module) is not torch.nn.Linear or getattr(module, "_llmboard_padded", False):
            continue
        module.forward = _padded(module.forward)
        module._llmboard_padded = True
        changed += 1
    return changed


def _padded(forward):
    import torch

    def padded_forward(x):
        rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
        if rows >= MIN_LINEAR_ROWS or rows == 0:
            return forward(x)
        flat = x.reshape(rows, x.shape[-1])
        flat = torch.cat([flat, flat.new_zeros(MIN_LINEAR_ROWS - rows, flat.shape[1])])
        out = forward(flat)[:rows]
        return out.reshape(*x.shape[:-1], out.shape[-1])

    return padded_forward
