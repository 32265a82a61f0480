"""widen_to_int8: weight-only (packed) Linears re-expressed on one int8 grid per row, run on oneDNN's int8 GEMMs."""

import pytest
import torch
from torch import nn

import shrink
from shrink.errors import UnsupportedOpError
from shrink.quant import PackedLinear, QuantLinear, TokenInt8Linear, WeightOnly, to_torch_kernels, widen_to_int8
from shrink.quant.runtimes.torch_backend import on_kernel_codes
from shrink.quant.runtimes.torch_token import onednn_int8_available
from shrink.quant.runtimes.widen import widened_layer
from shrink.select import Selector


def _int4(group: int = 32) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 32)).eval()
    with torch.no_grad():  # groups of a row at different scales, so that one row scale must serve several
        model[0].weight[:, :32] *= 3.0
    return shrink.quantize(model, WeightOnly(bits=4, group_size=group, selector=Selector(types=("Linear",))))


def test_widened_codes_stay_within_half_a_row_step_of_the_packed_weights():
    layer = _int4()[0]
    assert isinstance(layer, PackedLinear) and layer.packed.bits == 4
    with torch.no_grad():
        layer.input_scale = torch.linspace(0.5, 2.0, 64)  # AWQ's input scaling travels as the input smoothing
    wide = widened_layer(layer)
    assert isinstance(wide, QuantLinear) and wide.act_mode == "dynamic_token" and wide.weight_bits == 8
    packed = layer.packed.dequantize()
    step = wide.weight_scale[:, None]
    assert wide.weight_int.abs().max() == 127  # each row's largest weight on the grid's end
    assert ((wide.dequantized_weight() - packed).abs() <= step / 2 + 1e-7).all()
    # far finer than int4's own rounding: the groups' step is about 18x the row's (7 vs 127 levels a side)
    assert (step.squeeze(1) < layer.packed.scales.float().abs().amin(dim=1) / 4).all()
    assert torch.equal(wide.input_smooth, layer.input_scale) and torch.equal(wide.bias, layer.bias)


def test_widening_copies_the_model_and_keeps_its_function():
    q = _int4()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    wide, n = widen_to_int8(q)
    assert n == 2 and all(isinstance(wide[i], QuantLinear) for i in (0, 2))
    assert all(torch.equal(before[k], v) for k, v in q.state_dict().items())  # the quantized model is untouched
    x = torch.randn(7, 64)
    with torch.no_grad():
        ref, got = q(x), wide(x)
    # what differs is the per-token uint8 input and the int8 grid: a small fraction of the output's range
    assert (got - ref).abs().max() < 0.03 * ref.abs().max()


def test_a_model_without_packed_linears_is_refused():
    with pytest.raises(UnsupportedOpError, match="no weight-only .packed. Linear to widen"):
        widen_to_int8(nn.Sequential(nn.Linear(4, 4)))


@pytest.mark.skipif(not onednn_int8_available(), reason="needs oneDNN int8 kernels (x86)")
def test_torch_kernels_runs_the_widened_model_on_int8_gemms():
    q = _int4()
    real, notes = to_torch_kernels(q, torch.randn(1, 64), widen_int8=True)
    assert isinstance(real[0], TokenInt8Linear) and isinstance(real[2], TokenInt8Linear)
    assert "2 weight-only Linears widened to int8" in notes[0]
    assert real.shrink_execution.startswith("2 weight-only Linears widened to int8 in memory")
    assert real.shrink_runtime_figures["size_bytes"] == shrink.export.artifact.artifact_bytes(q)  # the int4 file
    x = torch.randn(7, 64)
    wide, _ = widen_to_int8(q)
    with torch.no_grad():  # the integer kernels compute what the widened model simulates, to float rounding
        assert torch.allclose(real(x), on_kernel_codes(wide)(x), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not onednn_int8_available(), reason="needs oneDNN int8 kernels (x86)")
def test_the_recipe_stage_adds_the_widened_row_and_passes_the_int4_model_on():
    from shrink.api import Context, apply
    from shrink.quant import TorchKernels

    q = _int4()
    ctx = Context(example_inputs=torch.randn(1, 64), progress=False)
    out = apply(q, TorchKernels(widen_int8=True), ctx)
    assert isinstance(out[0], PackedLinear)  # the stage's own model stays the int4 one
    (name, real), *_ = ctx.extra_models.items()
    assert "widened to int8" in name and isinstance(real[0], TokenInt8Linear)
