"""qparams arithmetic: round trip within scale/2, exact zero, granularities, rounding like PyTorch / ONNX."""

import pytest
import torch

from shrink.errors import ConfigError, DataError
from shrink.quant import (
    compute_qparams,
    dequantize,
    fake_quantize,
    qparams_for_tensor,
    qrange,
    quantize,
)


@pytest.mark.parametrize("bits", [2, 3, 4, 8, 16])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("signed", [True, False])
def test_round_trip_error_within_half_scale(bits, symmetric, signed):
    x = torch.randn(64, 33) * 3
    qp = qparams_for_tensor(x, bits, symmetric=symmetric, signed=signed)
    err = (dequantize(quantize(x, qp), qp) - x).abs().max()
    assert err <= qp.scale / 2 + 1e-6
    assert quantize(x, qp).min() >= qp.qmin and quantize(x, qp).max() <= qp.qmax


@pytest.mark.parametrize("symmetric", [True, False])
def test_zero_is_exact(symmetric):
    x = torch.tensor([0.0, 0.3, 1.7, 5.1, -0.2])
    qp = compute_qparams(-0.2, 5.1, 8, symmetric=symmetric, signed=False)
    assert fake_quantize(torch.zeros(3), qp).abs().max() == 0.0
    assert fake_quantize(x, qp)[0] == 0.0
    qp = compute_qparams(0.5, 3.0, 4)  # range not containing 0 is widened to include it
    assert fake_quantize(torch.zeros(1), qp)[0] == 0.0


def test_ranges_and_bad_bits():
    assert qrange(8, True) == (-128, 127)
    assert qrange(8, False) == (0, 255)
    assert qrange(4, True, narrow_range=True) == (-7, 7)
    for bad in (1, 9, 32, 0):
        with pytest.raises(ConfigError, match="bit width"):
            qrange(bad, True)


def test_matches_pytorch_per_tensor_and_per_channel():
    x = torch.randn(8, 16) * 2
    qp = compute_qparams(x.min(), x.max(), 8, signed=False)
    ref = torch.quantize_per_tensor(x, float(qp.scale), int(qp.zero_point), torch.quint8)
    assert torch.equal(quantize(x, qp).to(torch.int32), ref.int_repr().to(torch.int32))
    qc = qparams_for_tensor(x * 1.01, 8, symmetric=True, axis=0)  # no value exactly on the -127.5 tie
    refc = torch.quantize_per_channel(x, qc.scale.double(), qc.zero_point.long(), 0, torch.qint8)
    assert torch.equal(quantize(x, qc), refc.int_repr())


def test_round_half_to_even():
    qp = compute_qparams(-10.0, 10.0, 8, symmetric=True)
    scale = float(qp.scale)
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5]) * scale
    assert quantize(x, qp).tolist() == [0, 2, 2, 0, -2]


def test_per_channel_beats_per_tensor_on_uneven_channels():
    w = torch.randn(16, 64) * torch.logspace(-2, 1, 16)[:, None]
    per_t = qparams_for_tensor(w, 8, symmetric=True)
    per_c = qparams_for_tensor(w, 8, symmetric=True, axis=0)
    # relative error per channel (the small channels suffer under one shared scale)
    err_t = ((fake_quantize(w, per_t) - w).pow(2).mean(1) / w.pow(2).mean(1)).mean()
    err_c = ((fake_quantize(w, per_c) - w).pow(2).mean(1) / w.pow(2).mean(1)).mean()
    assert err_c < err_t / 10
    assert per_c.scale.shape == (16,)


def test_per_channel_other_axis_and_groups():
    w = torch.randn(4, 6, 3, 3)
    qp = qparams_for_tensor(w, 8, symmetric=True, axis=1)
    assert qp.scale.shape == (6,)
    assert (fake_quantize(w, qp) - w).abs().amax(dim=(0, 2, 3)).le(qp.scale / 2 + 1e-6).all()
    lin = torch.randn(10, 128)
    g = qparams_for_tensor(lin, 4, symmetric=True, group_size=32)
    assert g.scale.shape == (10, 4)
    q = quantize(lin, g)
    assert q.min() >= -8 and q.max() <= 7
    err = (dequantize(q, g) - lin).abs().reshape(10, 4, 32)
    assert (err <= g.scale.unsqueeze(-1) / 2 + 1e-6).all()
    with pytest.raises(ConfigError, match="group_size"):
        qparams_for_tensor(torch.randn(3, 100), 4, group_size=32)


def test_nan_rejected():
    with pytest.raises(DataError, match="NaN"):
        qparams_for_tensor(torch.tensor([1.0, float("nan")]))
