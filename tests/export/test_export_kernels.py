"""The report names the ONNX Runtime kernel of every layer: mixed W4/W8 layers keep int8 kernels, float layers say
float, int4 weight-only Linears run MatMulNBits, recurrent layers their LSTM / GRU op."""

import pytest
import torch
from torch import nn

import shrink
from shrink.autosearch import MixedPrecision
from shrink.export.kernels import kernel_summary, layer_kernels, weight_layers
from shrink.export.onnx import to_onnxruntime
from shrink.quant import Int8Dynamic, WeightOnly
from shrink.quant.layers.lowbit import LowBitConv, LowBitLinear
from shrink.report import Report
from shrink.report.html import render_html
from shrink.zoo import digits_data, digits_teacher


@pytest.fixture(scope="module")
def digits():
    return digits_teacher(progress=False).eval(), digits_data()


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Sequential(nn.Linear(128, 64))).eval()


def test_weight_layers_are_the_modules_holding_weights(digits):
    model, _ = digits
    assert weight_layers(model) == ["features.0", "features.3", "features.7", "classifier.1", "classifier.4"]
    packed = shrink.quantize(_mlp(), WeightOnly(bits=4, group_size=32))
    assert weight_layers(packed) == ["0", "2.0"]  # the packed child is part of its layer


def test_mixed_w4_w8_layers_keep_int8_kernels(digits):
    model, data = digits
    mixed = shrink.search(
        model,
        MixedPrecision(bits=(4, 8, 16), budget="bytes", budget_fraction=0.19),
        example_inputs=data.example_inputs,
        calibration=data.calibration,
        progress=False,
    )
    bits = {n: m.bits for n, m in mixed.named_modules() if isinstance(m, (LowBitConv, LowBitLinear))}
    assert {4, 8} <= set(bits.values())  # a real mix of widths
    kernels = to_onnxruntime(mixed, data.example_inputs).kernels
    assert set(kernels) == set(bits)
    for layer, width in bits.items():
        assert kernels[layer].endswith("(int8)" if width <= 8 else "(float)"), (layer, width, kernels[layer])


def test_float_int8_and_int4_graphs_name_their_kernels(tmp_path):
    mlp, x = _mlp(), torch.randn(8, 64)
    cases = {
        "float": mlp,
        "int8": shrink.quantize(mlp, Int8Dynamic(granularity="token"), calibration=[x]),
        "int4": shrink.quantize(mlp, WeightOnly(bits=4, group_size=32)),
    }
    for arithmetic, model in cases.items():
        path = shrink.export.onnx(model, tmp_path / f"{arithmetic}.onnx", x)
        kernels = layer_kernels(path, weight_layers(model))
        assert set(kernels) == {"0", "2.0"}
        assert all(k.endswith(f"({arithmetic})") for k in kernels.values()), kernels
    assert layer_kernels(path, ["not.a.layer"]) == {"not.a.layer": "-"}


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_float_recurrent_layers_name_their_own_op(tmp_path, cell):
    model = nn.Sequential(cell(4, 8, batch_first=True)).eval()
    path = shrink.export.onnx(model, tmp_path / "rnn.onnx", torch.randn(2, 5, 4))
    assert layer_kernels(path, weight_layers(model)) == {"0": f"{cell.__name__} (float)"}  # not the shape's Gather


def test_report_rows_carry_kernels_to_json_and_html(digits, tmp_path):
    model, data = digits
    session = to_onnxruntime(model, data.example_inputs)
    report = shrink.evaluate(
        {"fp32": model, "fp32 (ORT)": session}, data, batch_sizes=(1,), reps=3, warmup=1, progress=False
    )
    row = report.row("fp32 (ORT)")
    assert row.kernels == session.kernels and row.kernels["features.0"].endswith("(float)")
    assert any(n.startswith("kernels per layer: ") and kernel_summary(row.kernels) in n for n in row.notes)
    back = Report.from_json(report.to_json(tmp_path / "report.json"))
    assert back.row("fp32 (ORT)").kernels == row.kernels and back.row("fp32").kernels == {}
    page = render_html(report)
    assert '<table id="kernels">' in page and "features.3" in page
