"""The recurrent section's ONNX Runtime int8 rows: which layers really run on int8 kernels, on tiny models."""

from types import SimpleNamespace

import pytest
import torch
from benchmarks.mnist1d_recurrent import _onnx_int8, _onnx_kinds
from torch import nn

import shrink


class _Tiny(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.rnn = cell(1, 8, batch_first=True)
        self.linear = nn.Linear(8, 10)

    def forward(self, x):
        return self.linear(self.rnn(x.unsqueeze(-1))[0][:, -1])


@pytest.mark.parametrize(
    ("cell", "shrink_dynamic", "ort_dynamic"),
    [
        (nn.GRU, "int8: DynamicQuantizeMatMul x1; float: GRU x1", "int8: DynamicQuantizeMatMul x1; float: GRU x1"),
        (nn.LSTM, "int8: DynamicQuantizeLSTM x1, DynamicQuantizeMatMul x1; float: none", None),
    ],
    ids=["gru", "lstm"],
)
def test_onnx_int8_rows_name_the_kernels_that_run(tmp_path, cell, shrink_dynamic, ort_dynamic):
    torch.manual_seed(0)
    model = _Tiny(cell).eval()
    x = torch.randn(4, 40)
    data = SimpleNamespace(example_inputs=x[:1], calibration=[x[i : i + 2] for i in range(0, 4, 2)])
    shrink.export.onnx(model, tmp_path / "tiny.onnx", x[:1])
    failed: dict[str, str] = {}
    files = _onnx_int8(model, tmp_path / "tiny.onnx", data, tmp_path, "tiny", failed)
    assert not failed and len(files) == 3
    kinds = {label: _onnx_kinds(path) for label, path in files.items()}
    assert kinds["shrink int8_dynamic (ONNX Runtime)"] == shrink_dynamic
    assert kinds["ONNX Runtime quantize_dynamic (per-channel)"] == (ort_dynamic or shrink_dynamic)
    assert kinds["shrink int8_static (ONNX Runtime)"].endswith(f"float: {cell.__name__} x1")  # no static int8 RNN


def test_onnx_int8_failure_is_a_row(tmp_path):
    model = _Tiny(nn.LSTM).eval()
    data = SimpleNamespace(example_inputs=torch.randn(1, 40), calibration=[torch.randn(2, 40)])
    failed: dict[str, str] = {}
    files = _onnx_int8(
        model, tmp_path / "missing.onnx", data, tmp_path, "missing", failed
    )  # no fp32 export for ORT's quantizer to read
    assert set(failed) == {"ONNX Runtime quantize_dynamic (per-channel)"} and len(files) == 2
    assert failed["ONNX Runtime quantize_dynamic (per-channel)"].startswith("failed: ")
