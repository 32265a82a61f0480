"""torch_kernels: shrink's quantized layers converted onto PyTorch's integer kernels."""

import pytest
import torch
from torch import nn

import shrink
from shrink.errors import UnsupportedOpError
from shrink.quant import Int4WeightLinear, Int8WeightLinear, PackedLinear, WeightOnly, to_torch_kernels
from shrink.select import Selector


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 32), nn.ReLU(), nn.Linear(32, 8)).eval()


def _weight_only(model, bits, group, names):
    cfg = WeightOnly(bits=bits, group_size=group, selector=Selector(include=tuple(names), types=("Linear",)))
    return shrink.quantize(model, cfg)


def test_packed_linears_run_on_the_matching_kernel_and_the_rest_stay():
    model = _model()
    q = _weight_only(model, 4, 32, ["0", "2"])  # int4 groups of 32: the int4 kernel
    q = _weight_only(q, 8, None, ["4"])  # int8 one scale per row: the int8 kernel
    real, notes = to_torch_kernels(q, torch.randn(1, 64))
    assert isinstance(real[0], Int4WeightLinear) and isinstance(real[2], Int4WeightLinear)
    assert isinstance(real[4], Int8WeightLinear)
    assert isinstance(q[0], PackedLinear)  # the quantized model is unchanged
    x = torch.randn(5, 64)
    with torch.no_grad():
        ref, got = q(x), real(x)
    assert (got - ref).abs().max() < 0.02 * ref.abs().max()  # bf16 activations and scales in the kernels
    assert "3 weight-only Linears" in notes[0]
    assert real.shrink_runtime_figures["params"] == shrink.eval.count_params(q)[0]


def test_a_grid_without_a_kernel_stays_and_is_counted():
    q = _weight_only(_model(), 8, 32, ["0"])  # int8 with group scales: no PyTorch kernel reads it
    real, notes = to_torch_kernels(q)
    assert isinstance(real[0], PackedLinear)
    assert "1 with a grid no kernel reads" in notes[0]


def test_a_model_without_quantized_layers_is_refused():
    with pytest.raises(UnsupportedOpError, match="list a quantization stage"):
        to_torch_kernels(_model())
