"""x86 CPUs without VNNI sum each pair of uint8 x int8 products in 16 bits (vpmaddubsw), which saturates: there,
PyTorch's int8 kernels get 7-bit weight codes, so that the real int8 model computes what it simulates."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import shrink.quant.layers.convert as convert
import shrink.quant.runtimes.torch_token as torch_token
from shrink.quant import QuantLinear
from shrink.quant.runtimes.torch_backend import on_kernel_codes
from shrink.quant.runtimes.torch_token import kernel_codes, onednn_int8_available


def _codes() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(-128, 128, (6, 40), generator=g, dtype=torch.int8)
    codes[4] = torch.randint(-64, 65, (40,), generator=g, dtype=torch.int8)  # a row already within 7 bits
    codes[5, 0] = -128
    return codes, torch.rand(6, generator=g) * 0.01 + 0.001


def test_codes_are_unchanged_where_the_cpu_has_int8_dot_products(monkeypatch):
    monkeypatch.setattr(torch_token, "torch_int8_saturates", lambda: False)
    codes, scale = _codes()
    out_codes, out_scale = kernel_codes(codes, scale)
    assert torch.equal(out_codes, codes) and torch.equal(out_scale, scale)


def test_codes_narrow_to_seven_bits_where_pairs_saturate(monkeypatch):
    monkeypatch.setattr(torch_token, "torch_int8_saturates", lambda: True)
    codes, scale = _codes()
    narrow, wider = kernel_codes(codes, scale)
    assert narrow.dtype == torch.int8
    # no pair of products can pass 32,767: 255 * 64 * 2 = 32,640
    assert int(narrow.abs().max()) == 64 and 255 * 64 * 2 <= 32767
    assert torch.equal(narrow.abs().amax(dim=1), torch.full((6,), 64, dtype=torch.int8))
    assert torch.equal(narrow[4], codes[4]) and float(wider[4]) == float(scale[4])  # within 7 bits: as it was
    # each weight moves by at most half of its row's new step
    before, after = codes.float() * scale[:, None], narrow.float() * wider[:, None]
    assert bool(((after - before).abs() <= wider[:, None] / 2 * (1 + 1e-5)).all())


def test_on_kernel_codes_copies_the_model_with_the_kernels_codes(monkeypatch):
    monkeypatch.setattr(torch_token, "torch_int8_saturates", lambda: True)
    layer = QuantLinear(40, 6, True, 8, "dynamic_token")
    codes, scale = _codes()
    layer.weight_int.copy_(codes)
    layer.weight_scale.copy_(scale)
    copy = on_kernel_codes(layer)
    assert torch.equal(layer.weight_int, codes)  # the model itself is not touched
    assert torch.equal(copy.weight_int, kernel_codes(codes, scale)[0])


@pytest.mark.parametrize(
    "cap,vnni,saturates",
    [
        (None, True, False),
        (None, False, True),
        ("AVX2", True, True),
        ("avx512_core", True, True),
        ("AVX512_CORE_VNNI", True, False),
        ("AVX2_VNNI", True, False),
    ],
)
def test_saturation_follows_the_cpu_and_onednns_isa_cap(monkeypatch, cap, vnni, saturates):
    monkeypatch.setattr(convert, "cpu_has_vnni", lambda: vnni)
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert convert.torch_int8_saturates() is saturates


@pytest.mark.skipif(not onednn_int8_available(), reason="needs oneDNN int8 kernels (x86)")
def test_real_kernels_on_avx2_compute_what_the_model_simulates():
    # oneDNN capped at AVX2 runs the vpmaddubsw kernels of a CPU without VNNI: with 8-bit codes, uint8 inputs of 255
    # times weights of 127 saturate (about half of the true sum); the 7-bit codes give the simulated result
    script = textwrap.dedent(
        """
        import torch, shrink
        from torch import nn
        from shrink.quant import Int8Dynamic, to_torch_int8
        lin = nn.Sequential(nn.Linear(256, 2, bias=False))
        with torch.no_grad():
            lin[0].weight[0].fill_(1.0)
            lin[0].weight[1] = torch.linspace(-1, 1, 256)
        x = torch.ones(3, 256)
        x[:, 0] = 0.0  # each row's codes: 0, then 255s
        x[2] = torch.rand(256, generator=torch.Generator().manual_seed(0))
        q = shrink.quantize(lin, [Int8Dynamic(granularity="token")], calibration=[x], progress=False)
        real = to_torch_int8(q)
        with torch.no_grad():
            sim, out = q(x), real(x)
        print(float(((out - sim).abs() / sim.abs().max()).max()))
        print(real.shrink_execution)
        """
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    error, execution = done.stdout.strip().splitlines()[-2:]
    assert float(error) < 0.02  # 7-bit weights: within a percent; saturated 8-bit codes: about 50%
    assert "7-bit weight codes" in execution
