"""Linear layers through oneDNN with reordered weights (llmboard/inference/cpu_linear.py),
on the real SmolLM2: what is packed and what is not, that a packed layer computes the
product (against float64), that its rows do not depend on the rows beside them (what
batch invariance relies on), and the engine's numerics name."""

from __future__ import annotations

import pytest
import torch

from llmboard.inference import cpu_linear
from llmboard.inference.engine import TransformersLM
from llmboard.inference.invariance import pad_small_linears
from llmboard.inference.loading import load_model

pytestmark = pytest.mark.skipif(not cpu_linear.available(), reason="PyTorch without oneDNN")


@pytest.fixture(scope="module")
def smol(smol_dir):
    torch.set_num_threads(2)
    model, tok, _ = load_model(smol_dir, "fp32")
    dense = {n: m.weight.detach().clone() for n, m in model.named_modules() if _linear(m)}
    return model, tok, dense


def _linear(m) -> bool:
    return type(m) is torch.nn.Linear


def test_every_linear_packed_dense_weights_freed_tied_head_kept(smol):
    model, tok, dense = smol
    embedding = model.get_input_embeddings().weight
    lm = TransformersLM(model, tok, token_budget=256)
    linears = {n: m for n, m in model.named_modules() if _linear(m)}
    assert lm.onednn_linears == len(linears) == 30 * 7 + 1  # 7 per layer and the head
    assert lm.numerics == "e1-dnn"
    head = model.get_output_embeddings()
    assert head.weight is embedding  # tied to the embeddings: kept, still dense
    for name, m in linears.items():
        if m is not head:
            assert m.weight.is_mkldnn, name  # the reordered weight replaced the dense one
            assert "weight" not in dict(m.named_parameters(recurse=False)), name
    # a second engine on the same model: nothing packed twice, still named
    again = TransformersLM(model, tok, token_budget=256, onednn=False)
    assert again.onednn_linears == lm.onednn_linears and again.numerics == "e1-dnn"


def test_packed_layer_computes_the_product_rows_independent_of_their_batch(smol):
    model, tok, dense = smol
    TransformersLM(model, tok, token_budget=256)
    gen = torch.Generator().manual_seed(0)
    layers = model.model.layers[0]
    for name, m in (
        ("model.layers.0.self_attn.q_proj", layers.self_attn.q_proj),
        ("model.layers.0.mlp.down_proj", layers.mlp.down_proj),
        ("lm_head", model.get_output_embeddings()),
    ):
        x = torch.randn(300, m.in_features, generator=gen)
        with torch.inference_mode():
            full = m(x)
            truth = x.double() @ dense[name].double().T
            assert (full.double() - truth).abs().max() < 1e-4, name
            _rows_alone_equal_rows_in_a_batch(m, x, (2, 3, 5, 11, 16, 17, 33, 64, 129))


def _rows_alone_equal_rows_in_a_batch(m, x, rows_list, threads=(1, 2, 16)):
    """``m`` of the first rows of ``x`` equals those rows of ``m(x)``, bit for bit, at
    each thread count (the kernels' split of a product follows the threads)."""
    before = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            with torch.inference_mode():
                full = m(x)
                for rows in rows_list:
                    assert torch.equal(m(x[:rows].contiguous()), full[:rows]), (t, rows)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_padding_each_kernel_needs_at_any_thread_count(dtype):
    """What ``invariance``'s row minimums rest on, at 1, 2 and 16 threads, on 7B-class
    widths too: a packed layer padded by the invariant engine (a single row to
    ``MIN_ONEDNN_ROWS``), and a layer oneDNN does not pack (MKL, padded to
    ``MIN_MKL_ROWS``), give every row the numbers it gets in a batch of 300."""
    from llmboard.inference.invariance import MIN_MKL_ROWS, MIN_ONEDNN_ROWS, PADDED_ATTR

    gen = torch.Generator().manual_seed(2)
    rows = range(1, 41)
    for k, n in ((1536, 576), (4096, 256), (11008, 128)):
        packed = torch.nn.Linear(k, n, bias=False).to(dtype)
        plain = torch.nn.Linear(k, n, bias=False).to(dtype)
        plain._hf_hook = object()  # left to MKL, as an offloaded layer is
        model = torch.nn.Sequential(packed, plain)
        assert cpu_linear.pack_linears(model) == 1
        assert pad_small_linears(model) == 2
        assert getattr(packed, PADDED_ATTR) == MIN_ONEDNN_ROWS
        assert getattr(plain, PADDED_ATTR) == MIN_MKL_ROWS
        x = torch.randn(300, k, generator=gen).to(dtype)
        _rows_alone_equal_rows_in_a_batch(packed, x, rows)
        _rows_alone_equal_rows_in_a_batch(plain, x, rows)


def test_not_packed_other_dtypes_offloaded_layers_and_wrong_inputs(smol_dir):
    model, tok, _ = load_model(smol_dir, "fp32")
    m64 = torch.nn.Linear(8, 4).double()
    assert cpu_linear.pack_linears(torch.nn.Sequential(m64)) == 0  # float64: left alone
    hooked = model.model.layers[1].mlp.up_proj
    hooked._hf_hook = object()  # as accelerate marks a layer it places (offloaded)
    before = hooked.weight
    pad_small_linears(model)  # padded first (an invariant engine): stays padded
    n = cpu_linear.pack_linears(model)
    assert n == 30 * 7  # all but the hooked one
    assert hooked.weight is before and not hasattr(hooked, cpu_linear.PACKED_ATTR)
    down = model.model.layers[0].mlp.down_proj
    x = torch.randn(20, 1536, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        # one row, padded to 16 by the wrapper: the numbers of the row in a batch (oneDNN
        # takes another kernel for a single row of this width)
        assert torch.equal(down(x[:1]), down(x)[:1])
    with pytest.raises(TypeError, match="packed for torch.float32"):
        down(x.bfloat16())


def test_a_layer_computing_on_a_gpu_keeps_its_padding():
    """A layer accelerate runs on a GPU (its hook's execution device) is padded as the
    invariant engine always padded it (``MIN_LINEAR_ROWS``), so GPU numbers do not move;
    the same layer on the CPU gets MKL's ``MIN_MKL_ROWS``."""
    from types import SimpleNamespace

    from llmboard.inference.invariance import MIN_LINEAR_ROWS, MIN_MKL_ROWS, PADDED_ATTR

    on_gpu, on_cpu = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    on_gpu._hf_hook = SimpleNamespace(execution_device=torch.device("cuda", 0))
    on_cpu._hf_hook = SimpleNamespace(execution_device="cpu")
    assert pad_small_linears(torch.nn.Sequential(on_gpu, on_cpu)) == 2
    assert getattr(on_gpu, PADDED_ATTR) == MIN_LINEAR_ROWS
    assert getattr(on_cpu, PADDED_ATTR) == MIN_MKL_ROWS
    x = torch.randn(3, 8)
    with torch.inference_mode():  # the CPU one computes 32 rows and returns its 3
        out = on_cpu(x)
    assert out.shape == (3, 4)
    assert torch.allclose(out, x @ on_cpu.weight.detach().T + on_cpu.bias.detach(), atol=1e-6)


def test_row_minimums_are_checked_on_the_machine_and_raised_where_they_fail(caplog):
    """Each minimum is verified before use (``verified_rows``): a product whose rows
    change below 8 rows gets 8 and a warning naming it; one that never agrees gets
    ``PROBE_ROWS`` and says invariance is not assured; on this CPU the measured minimums
    hold as they are, for SmolLM2's layers and its attention (head width 64)."""
    import logging

    from llmboard.inference import invariance

    x = torch.randn(invariance.PROBE_ROWS, 16, generator=torch.Generator().manual_seed(4))

    def switches_below_8(rows):  # another rounding for fewer than 8 rows
        return rows * (1.0 if rows.shape[0] >= 8 else 1.0 + 2**-20)

    with caplog.at_level(logging.WARNING, logger="llmboard.inference.invariance"):
        assert invariance.verified_rows(switches_below_8, x, 0, 2, "test") == 8
        assert "test product of fewer than 8 rows" in caplog.text

        def never_agrees(rows):
            return rows + rows.shape[0]

        assert invariance.verified_rows(never_agrees, x, 0, 2, "odd") == invariance.PROBE_ROWS
        assert "may depend on its batch" in caplog.text
    for dtype in (torch.float32, torch.bfloat16):
        assert invariance.batched_rows(dtype, 64) == invariance.MIN_BATCHED_ROWS
        packed = torch.nn.Linear(576, 1536).to(dtype)
        cpu_linear.pack_linears(torch.nn.Sequential(packed))
        assert invariance.linear_rows(packed) == 2
