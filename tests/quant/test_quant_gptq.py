"""GPTQ weight rounding: same grid as round-to-nearest, lower layer output error, usable from Int8Static."""

import torch
from torch import nn

import shrink
from shrink.quant import Int8Static, QuantLinear
from shrink.quant.algorithms.gptq import gptq_codes
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


def test_int8_static_gptq_option():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 48), nn.GELU(), nn.Linear(48, 8))
    calib = [_correlated_inputs(64, 32) for _ in range(2)]
    cfg = dict(dynamic=shrink.select.Selector(types=("Linear",)), dynamic_granularity="token")
    plain = shrink.quantize(model, Int8Static(**cfg), calibration=calib)
    gptq = shrink.quantize(model, Int8Static(weight_rounding="gptq", **cfg), calibration=calib)
    assert isinstance(gptq[0], QuantLinear)
    assert torch.equal(plain[0].weight_scale, gptq[0].weight_scale)  # same grid
    x = _correlated_inputs(256, 32)
    with torch.no_grad():
        ref = model(x)
        e_plain, e_gptq = (plain(x) - ref).pow(2).mean(), (gptq(x) - ref).pow(2).mean()
    assert e_gptq < e_plain
