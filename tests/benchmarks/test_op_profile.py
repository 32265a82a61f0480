"""The per-op breakdown groups profiler events by kind and gives milliseconds per call."""

import torch
from benchmarks.op_profile import breakdown_table, op_kind, profile_ops


def test_op_kinds() -> None:
    assert op_kind("onednn::qlinear_pointwise") == "int8 GEMM (oneDNN qlinear)"
    assert op_kind("aten::bmm") == "float matmul (bmm / mm: attention, unfused)"
    assert op_kind("aten::addmm") == "float GEMM (linear / mkldnn)"
    assert op_kind("cpp_fused_add_gelu_0") == "GELU"  # named by what it computes first
    assert op_kind("cpp_fused_add_mul_3") == "fused pointwise / reductions (Inductor kernels)"
    assert op_kind("aten::something_else") == "other"


def test_profile_and_table() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64)).eval()
    x = torch.randn(32, 64)
    prof = profile_ops(lambda: model(x), calls=3)
    assert prof["LayerNorm"] > 0 and prof["float GEMM (linear / mkldnn)"] > 0
    text = breakdown_table("t", {"fp32": prof}).markdown()
    assert "| LayerNorm |" in text and "total (profiled" in text
