"""The int8 session of a per-layer policy runs the layers the policy keeps in fp32 on fp32 kernels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shrink.hw.ort_int8 import KEEP_FLOAT_LAYERS, export_int8, int8_session
from shrink.quant import ort_optimized_ops

pytestmark = pytest.mark.usefixtures("one_thread")


def _chain() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 8)).eval()


def test_fp32_layer_between_int8_layers_stays_fp32(tmp_path):
    model, x = _chain(), torch.randn(8, 16)
    path = export_int8(model, tmp_path / "m.onnx", x, [torch.randn(8, 16)], ["0", "4"])  # layer "2" kept fp32
    ops = ort_optimized_ops(path, disabled_optimizers=KEEP_FLOAT_LAYERS)
    assert ops["QGemm"] == 2 and ops["FusedGemm"] + ops["Gemm"] == 1
    # left to itself, ONNX Runtime quantizes the float layer sandwiched between quantized tensors
    assert ort_optimized_ops(path)["QGemm"] == 3
    session = int8_session(model, tmp_path / "s", x, [torch.randn(8, 16)], ["0", "4"], threads=1)
    assert torch.allclose(session(x), model(x), atol=0.1)
