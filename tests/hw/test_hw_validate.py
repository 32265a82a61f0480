"""Realized CPU models: per-layer int8 export, end-to-end timing, profile check, the mixed-precision export hook."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

import shrink
from shrink.autosearch.apply import apply_policy, calibrate_inputs
from shrink.autosearch.export import attach_int8_export
from shrink.hw import LayerChoice
from shrink.hw.ort_int8 import export_int8, layer_nodes
from shrink.hw.profile import MeasuredSpec
from shrink.hw.validate import check_profile, measure_policy_latency

pytestmark = pytest.mark.usefixtures("one_thread")


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b.detach()).norm() / b.detach().norm())


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_export_int8_quantizes_only_chosen_layers(tmp_path):
    model, x = _mlp(), torch.randn(4, 16)
    calib = [torch.randn(64, 16) for _ in range(4)]
    path = export_int8(model, tmp_path / "m.onnx", x, calib, ["0"])
    ops = _ops(path)
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    fp32 = shrink.export.onnx(model, tmp_path / "f.onnx", x)
    assert layer_nodes(fp32, ["0", "2"]) == {"0": ["/0/Gemm"], "2": ["/2/Gemm"]}
    session = shrink.export.OnnxModel(path, threads=1)
    assert _rel_err(session(x), model(x)) < 0.15


def test_measure_and_check_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("SHRINK_CACHE", str(tmp_path))
    model, x = _mlp(), torch.randn(8, 16)
    calib = [torch.randn(8, 16)]
    stats = measure_policy_latency(model, {"0": LayerChoice(bits=8)}, x, calib, threads=1, reps=5, min_time_s=0)
    assert stats.median_ms > 0 and stats.batch_size == 8
    wide = nn.Sequential(nn.Linear(16, 256), nn.ReLU(), nn.Linear(256, 8)).eval()
    profile = shrink.hw.load_profile("cpu").model_copy(update={"measured": MeasuredSpec(threads=1, reps=5)})
    check = check_profile(
        [("a", model, {}), ("b", model, {"0": LayerChoice(bits=8)}), ("c", wide, {})], x, calib, profile
    )
    assert len(check.predicted_s) == 3 and check.correlation.n == 3
    assert -1.0 <= check.correlation.spearman <= 1.0 and all(m > 0 for m in check.measured_s)


def test_fake_quant_model_exports_a_real_int8_graph(tmp_path):
    model, x = _mlp(), torch.randn(4, 16)
    data = [(torch.randn(64, 16), torch.zeros(64, dtype=torch.long)) for _ in range(4)]
    policy = {"0": LayerChoice(bits=4), "2": LayerChoice(bits=16)}
    q = apply_policy(model, policy, input_qparams=calibrate_inputs(model, ["0"], data))
    assert attach_int8_export(q, policy, data)
    path = shrink.export.onnx(q, tmp_path / "q.onnx", x)
    ops = _ops(path)
    assert "QuantizeLinear" in ops and "Round" not in ops  # the runtime's int8, not the fake-quant arithmetic
    session = shrink.export.OnnxModel(path, threads=1)
    assert _rel_err(session(x), q(x)) < 0.15
