"""The per-op breakdown groups profiler events by kind and gives milliseconds per call."""

import pytest
import torch
from benchmarks.op_profile import breakdown_table, op_kind, profile_ops


def test_op_kinds() -> None:
    assert op_kind("onednn::qlinear_pointwise") == "int8 GEMM (oneDNN qlinear)"
    assert op_kind("aten::bmm") == "float matmul (bmm / mm: attention, unfused)"
    assert op_kind("aten::addmm") == "float GEMM (linear / mkldnn)"
    assert op_kind("cpp_fused_add_gelu_0") == "GELU"  # named by what it computes first
    assert op_kind("cpp_fused_add_mul_3") == "fused pointwise / reductions (Inductor kernels)"
    assert op_kind("aten::something_else") == "other"
    assert op_kind("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention (fused SDPA kernel)"


def test_inductor_kernels_are_named_by_what_they_fuse() -> None:
    fused = "graph_1_cpp_fused__to_copy_add_aminmax_clamp_gelu_mul_qlinear_pointwise_reciprocal_round_sub_5"
    assert op_kind(fused) == "Inductor kernel: GELU + per-token quantization"  # not the int8 GEMM it follows
    ln = "graph_1_cpp_fused__to_copy_add_aminmax_clamp_mul_native_layer_norm_qlinear_pointwise_round_sub_4"
    assert op_kind(ln) == "Inductor kernel: LayerNorm + per-token quantization"
    assert op_kind("graph_0_cpp_fused__softmax_3") == "Inductor kernel: softmax"
    assert op_kind("graph_0_cpp_fused_add_clamp_mul_2") == "Inductor kernel: other pointwise / reductions"
    template = "GEMM (Inductor template kernel, epilogue fused)"
    assert op_kind("graph_0_cpp_CppMicroGemmAMX_3") == template
    assert op_kind("graph_0_gemm_m576n1536k384_kernel") == template  # not an unfused attention matmul
    assert op_kind("graph_1_gemm_ms97n384k1536_kernel") == template


def test_compiled_kernels_reach_the_profiler_only_inside_the_block() -> None:
    from benchmarks.op_profile import inductor_kernel_scopes
    from torch._inductor import config

    layers = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.GELU(), torch.nn.LayerNorm(16))
    x = torch.randn(8, 16)
    before = config.cpp.enable_kernel_profile
    torch._dynamo.reset()
    with inductor_kernel_scopes():
        assert config.cpp.enable_kernel_profile
        model = torch.compile(layers)
        with torch.inference_mode():  # as profile_ops calls it (another grad mode would compile again)
            model(x)  # compiles here, with the scopes
    assert config.cpp.enable_kernel_profile == before
    prof = profile_ops(lambda: model(x), calls=2)
    assert any(k.startswith("Inductor kernel: ") and "GELU" in k for k in prof), prof
    if not before:  # compiled outside the block: one opaque region, no kernel scopes to pay for
        torch._dynamo.reset()
        plain = torch.compile(layers)
        with torch.inference_mode():
            plain(x)
        assert not any(k.startswith("Inductor kernel: ") for k in profile_ops(lambda: plain(x), calls=2))
    torch._dynamo.reset()


def test_profile_and_table() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64)).eval()
    x = torch.randn(32, 64)
    prof = profile_ops(lambda: model(x), calls=3)
    assert prof["LayerNorm"] > 0 and prof["float GEMM (linear / mkldnn)"] > 0
    text = breakdown_table("t", {"fp32": prof}).markdown()
    assert "| LayerNorm |" in text and "total (profiled" in text


def test_kernel_times_keep_kernels_and_drop_framework_time() -> None:
    from benchmarks.op_profile import kernel_times

    profile = {
        "Inductor kernel: GELU + per-token quantization": 0.2,
        "Inductor kernel: LayerNorm + per-token quantization": 0.1,
        "GEMM (Inductor template kernel, epilogue fused)": 0.5,
        "int8 GEMM (oneDNN qlinear)": 0.05,
        "float matmul (bmm / mm: attention, unfused)": 0.1,
        "Inductor kernel: softmax": 0.07,
        "other": 9.0,  # framework time between kernels
    }
    out = kernel_times(profile)
    assert out == pytest.approx({"quantization": 0.3, "GEMM": 0.65, "other kernels": 0.07})


def test_an_int8_linear_compiled_for_profiling_shows_its_quantization_and_gemm() -> None:
    from benchmarks.op_profile import compiled_for_profile, kernel_times

    from shrink.quant.layers.modules import QuantLinear
    from shrink.quant.runtimes.torch_token import TokenInt8Linear, onednn_int8_available

    if not onednn_int8_available():
        pytest.skip("no oneDNN int8 linear in this PyTorch build")
    torch.manual_seed(0)
    layer = QuantLinear(64, 32, True, 8, "dynamic_token")
    layer.weight_int.copy_(torch.randint(-127, 128, (32, 64)).float())
    layer.weight_scale.copy_(torch.rand(32) * 0.01 + 1e-3)
    int8 = TokenInt8Linear(layer)
    x = torch.randn(2, 5, 64)
    run = compiled_for_profile(int8, x)
    torch.testing.assert_close(run(x), int8(x), rtol=1e-4, atol=1e-4)
    times = kernel_times(profile_ops(lambda: run(x), calls=3))
    assert times["quantization"] > 0 and times["GEMM"] > 0, times
    torch._dynamo.reset()
