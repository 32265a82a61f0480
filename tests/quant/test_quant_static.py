"""int8_static: digits accuracy in ONNX Runtime, integer kernels really used, QDQ graph == fake-quant, bad input."""

import copy

import pytest
import torch
from torch import nn

import shrink
from shrink.errors import ConfigError, DataError, ModelError, UnsupportedOpError
from shrink.eval.metrics import accuracy, predict
from shrink.export.onnx import OnnxModel
from shrink.quant import INTEGER_OPS, Int8Static, QuantConv2d, QuantLinear, ort_optimized_ops
from shrink.zoo import digits_data, digits_teacher


@pytest.fixture(scope="module")
def digits():
    torch.manual_seed(0)
    return digits_teacher(progress=False), digits_data()


def _acc(run, data):
    out, t = predict(run, data.test)
    return accuracy(out, t)


def test_digits_int8_in_onnxruntime(digits, tmp_path):
    model, data = digits
    before = copy.deepcopy(model.state_dict())
    q = shrink.quantize(model, Int8Static(observer="minmax"), calibration=data.calibration)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # user's model unchanged
    assert isinstance(q.features[0], QuantConv2d) and isinstance(q.classifier[1], QuantLinear)
    path = shrink.export.onnx(q, tmp_path / "q.onnx", data.example_inputs)
    ops = ort_optimized_ops(path)
    assert ops["QLinearConv"] == 3 and ops["Conv"] == 0
    assert set(ops) & INTEGER_OPS
    fp32, sim, ort_acc = _acc(model, data), _acc(q, data), _acc(OnnxModel(path), data)
    assert ort_acc >= fp32 - 0.6  # the benchmark checks the 0.3-point target
    assert abs(sim - ort_acc) <= 0.6
    assert q.shrink_execution == "fake-quant (simulated)"


def test_qdq_graph_matches_fake_quant(digits, tmp_path):
    model, data = digits
    q = shrink.quantize(model, Int8Static(observer="minmax"), calibration=data.calibration)
    x = next(iter(data.test))[0][:64]
    sim = q(x)
    ort_out = OnnxModel(shrink.export.onnx(q, tmp_path / "q.onnx", data.example_inputs))(x)
    step = float(q.classifier[4].output_qparams[0]) if q.classifier[4].quantize_output else 0.05
    # same integer arithmetic up to rounding of requantization: a few output steps at most
    assert (sim - ort_out).abs().max() <= 2 * max(step, 0.02)
    assert (sim.argmax(1) == ort_out.argmax(1)).float().mean() >= 0.98


def test_w4a8_aciq_bias_correction_beats_minmax(digits):
    model, data = digits
    plain = shrink.quantize(
        model, Int8Static(weight_bits=4, observer="minmax", calibration_batches=2), calibration=data.calibration
    )
    best = shrink.quantize(
        model,
        Int8Static(
            weight_bits=4,
            observer="aciq_laplace",
            weight_observer="aciq_laplace",
            bias_correction=True,
            calibration_batches=2,
        ),
        calibration=data.calibration,
    )
    assert q_codes_within(best, 4)
    assert _acc(best, data) >= _acc(plain, data) - 0.3
    assert _acc(best, data) >= _acc(model, data) - 1.5


def q_codes_within(model, bits):
    lim = 2 ** (bits - 1) - 1
    return all(m.weight_int.abs().max() <= lim for m in model.modules() if isinstance(m, (QuantConv2d, QuantLinear)))


def test_bn_folded_and_save_size(digits, tmp_path):
    model, data = digits
    q = shrink.quantize(model, Int8Static(), calibration=data.calibration)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in q.modules())
    from shrink.export.artifact import artifact_bytes

    assert artifact_bytes(q) < 0.4 * artifact_bytes(model)


class _Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean(-1))


def test_bad_inputs(digits):
    model, data = digits
    with pytest.raises(DataError, match="empty calibration"):
        shrink.quantize(model, Int8Static(), calibration=[])
    with pytest.raises(DataError, match="required"):
        shrink.quantize(model, Int8Static(), calibration=None)
    with pytest.raises(DataError, match="shape"):
        shrink.quantize(model, Int8Static(), calibration=[torch.randn(4, 3, 8, 8)])
    with pytest.raises(DataError, match="NaN"):
        shrink.quantize(model, Int8Static(), calibration=[torch.full((2, 1, 8, 8), float("nan"))])
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.classifier[1].weight[0, 0] = float("inf")
    with pytest.raises(ModelError, match=r"classifier\.1\.weight"):
        shrink.quantize(broken, Int8Static(), calibration=data.calibration)
    with pytest.raises(UnsupportedOpError, match="'conv'.*Conv1d"):
        shrink.quantize(_Conv1dNet(), Int8Static(), calibration=[torch.randn(2, 2, 8)])
    with pytest.raises(ConfigError, match="weight_bits"):
        Int8Static(weight_bits=9)
    with pytest.raises(ConfigError, match="activation_bits"):
        Int8Static(activation_bits=1)
