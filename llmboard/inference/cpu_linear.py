"""Linear layers on the CPU through oneDNN, with each weight reordered once.

PyTorch's fp32 ``F.linear`` on the CPU is MKL's sgemm on the weight as stored. For the
few rows of a decoding step that reads the weights at under half the memory's speed;
oneDNN with the weight reordered once into its blocked layout
(``torch.ops.mkldnn._reorder_linear_weight``, what inductor's freezing pass does for CPU
inference) computes the same product 1.7x faster at 1 to 24 rows in fp32 and 1.15x at
2,048 rows (``bench/cpu_linear.py``, docs/engine.md). Its rows are independent of the rows beside
them from 2 rows on (1 to 16 threads), the property batch invariance needs (MKL's from
12 to 28 rows, following the thread count): the invariant engine pads a single row to
``invariance.MIN_ONEDNN_ROWS``, a packed layer's only padding. The numbers do
not depend on whether the weight was reordered: a different rounding of the same
product than MKL's, hence numerics ``-dnn`` in the request store's key.

The reordered weight replaces the layer's own in the model; a weight the model ties to
another module (the output head and the input embeddings) is kept and the reordered one
added. The process still grows by about the reordered copy: transformers memory-maps
the safetensors file, and the mapping lives while any tensor of it does (measured in
docs/engine.md). A packed layer computes only in its own dtype on the CPU.
"""

from __future__ import annotations

from .invariance import PADDED_ATTR, pad_small_linears

PACKED_ATTR = "_llmboard_onednn"


def available() -> bool:
    """Whether this PyTorch has oneDNN with the two operators used here."""
    import torch

    ops = torch.ops.mkldnn
    return bool(
        torch.backends.mkldnn.is_available()
        and hasattr(ops, "_reorder_linear_weight")
        and hasattr(ops, "_linear_pointwise")
    )


def pack_linears(model) -> int:
    """Make every ``torch.nn.Linear`` of ``model`` whose weight is on the CPU in fp32 or
    bf16 compute through oneDNN with its weight reordered once. Layers placed by
    accelerate's hooks (offloaded) and other dtypes are left alone; a layer already
    packed is not packed twice. Returns ``packed_layers(model)``."""
    import torch

    if not available():
        return packed_layers(model)
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    tied = {id(embeddings.weight)} if embeddings is not None else set()
    for module in model.modules():
        if type(module) is not torch.nn.Linear or hasattr(module, PACKED_ATTR):
            continue
        weight = module.weight
        if (
            weight.device.type != "cpu"
            or weight.dtype not in (torch.float32, torch.bfloat16)
            or hasattr(module, "_hf_hook")
        ):
            continue
        reordered = torch.ops.mkldnn._reorder_linear_weight(weight.detach())
        setattr(module, PACKED_ATTR, reordered)
        if id(weight) not in tied:
            # the reordered weight is the layer's weight now (the dense one is dropped)
            del module.weight
            module.weight = reordered
        module.forward = _packed_forward(module, reordered)
        if getattr(module, PADDED_ATTR, 0):  # padded before (for MKL): again, for oneDNN
            delattr(module, PADDED_ATTR)
            pad_small_linears(module)
    return packed_layers(model)


def packed_layers(model) -> int:
    """How many of ``model``'s layers compute through oneDNN (``pack_linears``)."""
    return sum(hasattr(m, PACKED_ATTR) for m in model.modules())


def _packed_forward(module, reordered):
    import torch

    linear = torch.ops.mkldnn._linear_pointwise

    def forward(x):
        if x.dtype != reordered.dtype or x.device.type != "cpu":
            raise TypeError(
                f"a linear layer packed for {reordered.dtype} on the CPU got {x.dtype} on "
                f"{x.device}: load the model again to compute in another dtype or device"
            )
        return linear(x, reordered, module.bias, "none", [], "")

    return forward
