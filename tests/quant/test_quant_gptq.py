"""GPTQ weight rounding: same grid as round-to-nearest, lower layer output error, usable from Int8Static."""

import pytest
import torch
from torch import nn

import shrink
from shrink.errors import ConfigError, DataError
from shrink.quant import GPTQ, Int8Dynamic, Int8Static, PreparedLinear, QuantLinear
from shrink.quant.algorithms.gptq import gptq_codes, input_hessians
from shrink.quant.numerics.qparams import compute_qparams, dequantize, quantize


def _correlated_inputs(n: int, d: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(d, d, generator=g) / d**0.5
    return torch.randn(n, d, generator=g) @ mix * torch.linspace(0.2, 3.0, d)


def test_gptq_lowers_output_error_on_same_grid():
    torch.manual_seed(0)
    w = torch.randn(64, 96) * 0.05
    x = _correlated_inputs(2048, 96)
    amax = w.abs().amax(dim=1)
    qp = compute_qparams(-amax, amax, 8, symmetric=True, signed=True, axis=0, narrow_range=True)
    rtn = quantize(w, qp)
    codes = gptq_codes(w, (x.T @ x).double() / x.shape[0], qp)
    assert codes.dtype == torch.int8 and codes.shape == w.shape
    assert int(codes.min()) >= -127 and int(codes.max()) <= 127
    err = lambda c: float(((x @ dequantize(c, qp).T) - (x @ w.T)).pow(2).mean())  # noqa: E731
    assert err(codes) < 0.85 * err(rtn)
    # each code stays within a couple of steps of round-to-nearest (error feedback, not a new grid)
    assert int((codes.int() - rtn.int()).abs().max()) <= 3


def test_gptq_stage_keeps_the_grid_and_lowers_the_error_of_the_int8_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 48), nn.GELU(), nn.Linear(48, 8))
    calib = [_correlated_inputs(64, 32) for _ in range(2)]
    plain = shrink.quantize(model, Int8Dynamic(granularity="token"), calibration=calib)
    gptq = shrink.quantize(model, [GPTQ(), Int8Dynamic(granularity="token")], calibration=calib)
    assert isinstance(gptq[0], QuantLinear)
    assert torch.equal(plain[0].weight_scale, gptq[0].weight_scale)  # same grid
    x = _correlated_inputs(256, 32)
    with torch.no_grad():
        ref = model(x)
        e_plain, e_gptq = (plain(x) - ref).pow(2).mean(), (gptq(x) - ref).pow(2).mean()
    assert e_gptq < e_plain


def test_gptq_leaves_a_float_model_on_the_grid_that_int8_stages_store_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 48), nn.GELU(), nn.Linear(48, 8)).eval()
    calib = [_correlated_inputs(64, 32) for _ in range(2)]
    rounded = shrink.quantize(model, GPTQ(), calibration=calib)
    assert isinstance(rounded[0], PreparedLinear) and rounded[0].grid_bits == 8
    hessians = input_hessians(model, {"0": model[0], "2": model[2]}, calib)  # one pass over the float model
    for name in ("0", "2"):
        w = model.get_submodule(name).weight.detach()
        amax = w.abs().amax(dim=1)
        grid = compute_qparams(-amax, amax, 8, symmetric=True, signed=True, axis=0, narrow_range=True)
        codes = gptq_codes(w, hessians[name], grid)
        assert torch.equal(rounded.get_submodule(name).weight, dequantize(codes, grid))
        for scheme in (Int8Dynamic(granularity="token"), Int8Static()):
            q = shrink.quantize(rounded, scheme, calibration=calib)
            assert torch.equal(q.get_submodule(name).weight_int, codes)
    with pytest.raises(ConfigError, match=r"int8_dynamic: layer .0.: .* 8-bit grid by a rounding stage .* 7 bits"):
        shrink.quantize(rounded, Int8Dynamic(weight_range="reduced"), calibration=calib)


class _Tokens(nn.Module):
    """A token model taking ``(x, attention_mask)`` as a Hugging Face encoder does."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def test_padding_tokens_are_left_out_of_the_hessian():
    g = torch.Generator().manual_seed(0)
    model = _Tokens()
    real = torch.randn(2, 5, 8, generator=g)
    padded = torch.cat([real, 100 * torch.randn(2, 3, 8, generator=g)], dim=1)  # junk where the mask is 0
    mask = torch.cat([torch.ones(2, 5), torch.zeros(2, 3)], dim=1).long()
    h_real = input_hessians(model, {"lin": model.lin}, [{"x": real, "attention_mask": torch.ones(2, 5).long()}])
    h_padded = input_hessians(model, {"lin": model.lin}, [{"x": padded, "attention_mask": mask}])
    rows = real.reshape(-1, 8).double()
    assert torch.allclose(h_padded["lin"], h_real["lin"]) and torch.allclose(h_real["lin"], rows.T @ rows / 10)


def test_sequential_gptq_rounds_each_layer_on_the_outputs_of_the_layers_already_rounded():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 48), nn.GELU(), nn.Linear(48, 8)).eval()
    calib = [_correlated_inputs(64, 32) for _ in range(2)]
    rounded = shrink.quantize(model, GPTQ(sequential=True), calibration=calib)
    seen: list[torch.Tensor] = []
    handle = rounded[2].register_forward_pre_hook(lambda m, a: seen.append(a[0].reshape(-1, 48).double()))
    with torch.no_grad():
        for x in calib:
            rounded(x)
    handle.remove()
    rows = torch.cat(seen)
    h_rounded = rows.T @ rows / rows.shape[0]  # what layer 2 receives once layer 0 holds its rounded weights
    w = model[2].weight.detach()
    amax = w.abs().amax(dim=1)
    grid = compute_qparams(-amax, amax, 8, symmetric=True, signed=True, axis=0, narrow_range=True)
    assert torch.equal(rounded[2].weight, dequantize(gptq_codes(w, h_rounded, grid), grid))
    h_float = input_hessians(model, {"2": model[2]}, calib)["2"]
    assert not torch.allclose(h_float, h_rounded)  # the float model's inputs differ: sequential is not one-shot


def test_a_layer_that_runs_twice_per_forward_is_refused_for_sequential_gptq():
    # one-shot GPTQ (the default) accepts it: both calls' inputs enter the layer's Hessian
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(6, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(torch.relu(self.lin(x)))

    with pytest.raises(DataError, match=r"runs more than once per forward: \['lin'\]"):
        shrink.quantize(Twice(), GPTQ(sequential=True), calibration=[torch.randn(4, 6)])
