"""Dynamic int8 Linear in ONNX Runtime (integer ops, agreement with the simulation), SmoothQuant, BN folding."""

import pytest
import torch
from torch import nn

import shrink
from shrink.errors import UnsupportedOpError
from shrink.export.onnx import OnnxModel
from shrink.quant import INTEGER_OPS, Int8Dynamic, Int8Static, SmoothQuant, ort_optimized_ops
from shrink.quant.algorithms.fold import fold_bn_into
from shrink.quant.algorithms.smooth import smoothing_factors


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 128)
        self.fc2 = nn.Linear(128, 32)

    def forward(self, x):
        return self.fc2(torch.nn.functional.gelu(self.fc1(x)))


def test_dynamic_linear_runs_integer_ops_and_matches(tmp_path):
    torch.manual_seed(0)
    net = _MLP().eval()
    x = torch.randn(4, 10, 64)
    q = shrink.quantize(net, Int8Dynamic())
    path = shrink.export.onnx(q, tmp_path / "d.onnx", x[:1])
    ops = ort_optimized_ops(path)
    assert set(ops) & INTEGER_OPS and ops["MatMul"] == 0
    ort_out, sim = OnnxModel(path)(x), q(x)
    ref = net(x)
    assert (ort_out - sim).abs().max() < 0.02 * ref.abs().max()
    assert (sim - ref).norm() / ref.norm() < 0.02


def test_smoothing_keeps_float_function_and_helps_outliers():
    torch.manual_seed(0)
    w = torch.randn(16, 32)
    absmax = torch.ones(32)
    absmax[3] = 50.0
    s = smoothing_factors(absmax, w, 0.5)
    x = torch.randn(8, 32)
    x[:, 3] *= 50
    assert torch.allclose((x / s) @ (w * s).t(), x @ w.t(), atol=1e-3)
    assert (x / s).abs().amax(0).max() / (x / s).abs().amax(0).min() < x.abs().amax(0).max() / x.abs().amax(0).min()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(32, 16)

        def forward(self, x):
            return self.fc(x)

    net = Net().eval()
    calib = [x]
    plain = shrink.quantize(net, Int8Static(observer="minmax", quantize_outputs=False), calibration=calib)
    static = Int8Static(observer="minmax", quantize_outputs=False)
    smooth = shrink.quantize(net, [SmoothQuant(alpha=0.5), static], calibration=calib)
    ref = net(x)
    assert (smooth(x) - ref).norm() < (plain(x) - ref).norm()


def test_bn_fold_is_exact():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.eval()
    x = torch.randn(2, 3, 8, 8)
    ref = bn(conv(x))
    with torch.no_grad():
        fold_bn_into(conv, bn)
    assert torch.allclose(conv(x), ref, atol=1e-5)


@pytest.mark.parametrize("bits", [1, 9])
def test_bad_bits_error(bits):
    with pytest.raises(shrink.errors.ConfigError, match="weight_bits"):
        Int8Static(weight_bits=bits)


def test_per_token_dynamic_matches_onnx_exactly(tmp_path):
    torch.manual_seed(0)
    net = _MLP().eval()
    x = torch.randn(4, 10, 64)
    x[:, 0] *= 30  # one token with a much larger range: per-token scales keep the others precise
    tok = shrink.quantize(net, Int8Dynamic(granularity="token"))
    per_tensor = shrink.quantize(net, Int8Dynamic())
    path = shrink.export.onnx(tok, tmp_path / "t.onnx", x[:1])
    assert ort_optimized_ops(path)["MatMulIntegerToFloat"] == 2
    ort_out, sim, ref = OnnxModel(path)(x), tok(x), net(x)
    assert (ort_out - sim).abs().max() < 1e-4 * ref.abs().max()
    assert (sim - ref)[:, 1:].norm() < (per_tensor(x) - ref)[:, 1:].norm() / 3


class _Recurrent(nn.Module):
    def __init__(self, cell=nn.LSTM, **kwargs):
        super().__init__()
        self.rnn = cell(8, 16, batch_first=True, **kwargs)
        self.fc = nn.Linear(16 * (2 if kwargs.get("bidirectional") else 1), 4)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


@pytest.mark.parametrize(
    ("kwargs", "weight_range"), [({}, "full"), ({"bidirectional": True, "num_layers": 2}, "full"), ({}, "u8")]
)
def test_dynamic_lstm_runs_in_ort_int8_kernel(tmp_path, kwargs, weight_range):
    torch.manual_seed(0)
    net = _Recurrent(**kwargs).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(5, 12, 8)
    q = shrink.quantize(net, Int8Dynamic(weight_range=weight_range))
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # the user's model is untouched
    w = q.rnn.weight_hh_l0
    codes = w / (w.abs().amax(dim=1, keepdim=True) / 127)
    assert torch.allclose(codes, codes.round(), atol=1e-3)  # PyTorch side: weights on per-row int8 grids
    path = shrink.export.onnx(q, tmp_path / "lstm.onnx", x[:1])
    ops = ort_optimized_ops(path)
    assert ops["DynamicQuantizeLSTM"] == net.rnn.num_layers and ops["LSTM"] == 0
    ref, sim, ort_out = net(x), q(x), OnnxModel(path)(x)
    assert (ort_out - sim).abs().max() < 0.02 * ref.abs().max()  # ORT's int8 kernel agrees with the simulation
    assert 0 < (sim - ref).abs().max() < 0.02 * ref.abs().max()


def test_dynamic_onnxruntime_skipped_lstm_stays_float(tmp_path):
    net = _Recurrent().eval()
    q = shrink.quantize(net, Int8Dynamic(selector={"types": ["Linear"]}))
    ops = ort_optimized_ops(shrink.export.onnx(q, tmp_path / "m.onnx", torch.randn(1, 12, 8)))
    assert ops["LSTM"] == 1 and ops["DynamicQuantizeLSTM"] == 0


def test_dynamic_onnxruntime_refuses_gru_by_name():
    with pytest.raises(UnsupportedOpError, match=r"'rnn' is a GRU.*backend='torch'"):
        shrink.quantize(_Recurrent(nn.GRU).eval(), Int8Dynamic())


def test_dynamic_lstm_survives_save_and_load(tmp_path):
    torch.manual_seed(0)
    q = shrink.quantize(_Recurrent().eval(), Int8Dynamic())
    loaded = shrink.load(shrink.save(q, tmp_path / "m.shrink"), lambda: _Recurrent().eval())
    x = torch.randn(2, 12, 8)
    assert torch.equal(loaded(x), q(x))
    ops = ort_optimized_ops(shrink.export.onnx(loaded, tmp_path / "m.onnx", x[:1]))
    assert ops["DynamicQuantizeLSTM"] == 1 and ops["LSTM"] == 0
