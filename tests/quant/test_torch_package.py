"""Int8 models compiled ahead of time into an AOTInductor package, and loaded in another process."""

import json
import subprocess
import sys
import zipfile

import pytest
import torch
from torch import nn

import shrink
from shrink.errors import ConfigError, DataError, FileFormatError, ModelError, UnsupportedOpError
from shrink.quant import (
    Int8Dynamic,
    Int8Static,
    PackagedInt8,
    SmoothQuant,
    TokenInt8Linear,
    load_int8_package,
    package_cpu_isa,
    package_int8,
    to_torch_int8,
)
from shrink.quant.runtimes.torch_package import _cpu_isa_here
from shrink.quant.runtimes.torch_token import onednn_int8_available

needs_onednn = pytest.mark.skipif(not onednn_int8_available(), reason="oneDNN int8 linear (x86 PyTorch) missing")


class _Block(nn.Module):
    """Three projections of one input (merged into one int8 GEMM), attention, an FFN with GELU."""

    def __init__(self) -> None:
        super().__init__()
        self.query, self.key, self.value = nn.Linear(32, 16), nn.Linear(32, 16), nn.Linear(32, 32)
        self.up, self.down = nn.Linear(32, 64), nn.Linear(64, 32)

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        q, k, v = self.query(x), self.key(x), self.value(x)
        h = x + torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1) @ v
        return (h + self.down(nn.functional.gelu(self.up(h)))) * scale


def _int8_block() -> nn.Module:
    torch.manual_seed(0)
    model = _Block().eval()
    calib = [{"x": torch.randn(3, 6, 32) * torch.linspace(0.2, 4.0, 32), "scale": torch.ones(1)} for _ in range(2)]
    cfg = [SmoothQuant(alpha=0.5, per_token=True), Int8Dynamic(granularity="token")]
    q = shrink.quantize(model, cfg, calibration=calib)
    return to_torch_int8(q, example_inputs=calib[0])


@needs_onednn
@pytest.mark.slow
def test_package_computes_what_the_int8_model_does_in_a_new_process(tmp_path):
    real = _int8_block()
    assert real.query.shared.fused.packed_weight.is_mkldnn
    example = {"x": torch.randn(3, 6, 32), "scale": torch.ones(1)}
    path = package_int8(real, tmp_path / "block.pt2", example, max_autotune=False)  # autotuning: the bench
    assert path == tmp_path / "block.pt2" and path.stat().st_size > 0
    assert real.query.shared.fused.packed_weight.is_mkldnn  # the model it was built from is left as it was
    assert package_cpu_isa(path) and package_cpu_isa(path) <= _cpu_isa_here()
    loaded = load_int8_package(path)
    assert isinstance(loaded, PackagedInt8) and "AOTInductor package" in loaded.shrink_execution
    shapes = [(3, 6, 32), (1, 5, 32), (4, 11, 32)]  # batch 1 and other sequence lengths: one dynamic graph
    inputs = [{"x": torch.randn(*s), "scale": torch.full((1,), 0.5)} for s in shapes]
    with torch.no_grad():
        expected = [real(**x) for x in inputs]
    for x, want in zip(inputs, expected, strict=True):
        got = loaded(**x)
        assert got.shape == want.shape
        assert float((got - want).abs().max()) <= 1e-3 * float(want.abs().max())
    # inputs are checked (the kernels do not) and made contiguous (the kernels assume it)
    wide = torch.randn(4, 11, 64)[..., ::2]
    with torch.no_grad():
        want = real(x=wide, scale=torch.ones(1))
    assert float((loaded(x=wide, scale=torch.ones(1)) - want).abs().max()) <= 1e-3 * float(want.abs().max())
    with pytest.raises(DataError, match="input x has dtype torch.float64, the package was built for float32"):
        loaded(x=torch.randn(2, 5, 32, dtype=torch.float64), scale=torch.ones(1))
    with pytest.raises(DataError, match=r"input x of shape \(2, 5, 31\); the package takes \(1\.\., 1\.\., 32\)"):
        loaded(x=torch.randn(2, 5, 31), scale=torch.ones(1))
    with pytest.raises(DataError, match=r"called with inputs \['x'\]; the package takes \['x', 'scale'\]"):
        loaded(x=torch.randn(2, 5, 32))
    # another Python process loads it without the model's classes and gets the same numbers
    torch.save(inputs, tmp_path / "inputs.pt")
    code = (
        "import sys, torch; from shrink.quant import load_int8_package; "
        "m = load_int8_package(sys.argv[1]); xs = torch.load(sys.argv[2]); "
        "torch.save([m(**x) for x in xs], sys.argv[3])"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(path), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
        check=True,
        timeout=300,
    )
    for got, want in zip(torch.load(tmp_path / "out.pt"), expected, strict=True):
        assert float((got - want).abs().max()) <= 1e-3 * float(want.abs().max())


@needs_onednn
@needs_onednn
@pytest.mark.slow
def test_package_never_bakes_in_profiler_scopes(tmp_path):
    """Inductor's kernel profiling, left on, would make every kernel of the package open a profiler scope on
    every call: the package is built without it, and the setting is the caller's again afterwards."""
    from torch._inductor import config

    example = {"x": torch.randn(3, 6, 32), "scale": torch.ones(1)}
    with config.patch({"cpp.enable_kernel_profile": True}):
        path = package_int8(_int8_block(), tmp_path / "block.pt2", example, max_autotune=False)
        assert config.cpp.enable_kernel_profile
    with zipfile.ZipFile(path) as archive:
        sources = [archive.read(n) for n in archive.namelist() if n.endswith(".cpp")]
    assert sources
    assert not any(b"RecordFunction" in src for src in sources)


def test_package_refuses_a_wrong_path_and_a_model_without_int8_linears(tmp_path):
    real = _int8_block()
    assert isinstance(real.up, TokenInt8Linear)
    with pytest.raises(ConfigError, match=r"model\.onnx must end in \.pt2"):
        package_int8(real, tmp_path / "model.onnx", {"x": torch.randn(3, 6, 32), "scale": torch.ones(1)})
    simulated = shrink.quantize(nn.Sequential(nn.Linear(4, 4)).eval(), [Int8Dynamic(granularity="token")])
    with pytest.raises(ModelError, match="package_int8: 0 is a simulated .* convert the quantized model with"):
        package_int8(simulated, tmp_path / "model.pt2", torch.randn(2, 4))
    static = shrink.quantize(
        nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)).eval(),
        [Int8Static()],
        calibration=[torch.randn(4, 8)],
    )
    with pytest.raises(UnsupportedOpError, match=r"package_int8: 0 \(and 1 more\) runs on torch.ao's quantized ops"):
        package_int8(to_torch_int8(static), tmp_path / "model.pt2", torch.randn(2, 8))
    assert not list(tmp_path.iterdir())  # nothing written


def _fake_package(path, isa: str):
    with zipfile.ZipFile(path, "w") as archive:
        meta = {"AOTI_DEVICE_KEY": "cpu", "AOTI_CPU_ISA": isa}
        archive.writestr("model/data/aotinductor/model/abc.wrapper_metadata.json", json.dumps(meta))


def test_load_names_a_missing_file_a_foreign_file_and_a_cpu_that_lacks_the_kernels_isa(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file at .*absent.pt2"):
        load_int8_package(tmp_path / "absent.pt2")
    (tmp_path / "text.pt2").write_text("not a package")
    with pytest.raises(FileFormatError, match="text.pt2: not an AOTInductor package"):
        load_int8_package(tmp_path / "text.pt2")
    with zipfile.ZipFile(tmp_path / "other.pt2", "w") as archive:
        archive.writestr("other/data.pkl", b"x")
    with pytest.raises(FileFormatError, match="no aotinductor metadata"):
        load_int8_package(tmp_path / "other.pt2")
    _fake_package(tmp_path / "future.pt2", "AVX512 AVX_FROM_THE_FUTURE")
    assert package_cpu_isa(tmp_path / "future.pt2") == {"AVX512", "AVX_FROM_THE_FUTURE"}
    with pytest.raises(
        UnsupportedOpError, match=r"future.pt2: built for CPU instruction sets \[.*'AVX_FROM_THE_FUTURE'"
    ):
        load_int8_package(tmp_path / "future.pt2")


class _Wrapper(nn.Module):
    """Takes anything, as bf16 casts and other wrappers do."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(8, 4)

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        return self.inner(*args, **kwargs)


def test_export_takes_any_signature_and_sizes_vary_from_one():
    from shrink.quant.runtimes.torch_package import _example, _export, _input_spec

    x = torch.randn(3, 5, 8)
    for inputs, name in (({"input": x}, "input"), ((x,), "argument 0"), (x, "argument 0")):
        program, names = _export(_Wrapper().eval(), inputs, None)
        dims = [[1, None], [1, None], [8, 8]]
        assert _input_spec(program, names, _example(inputs)[1]) == [{"name": name, "dtype": "float32", "dims": dims}]
    block = {"x": x.repeat(1, 1, 4), "scale": torch.ones(1)}
    program, names = _export(_Block().eval(), block, None)
    spec = _input_spec(program, names, _example(block)[1])
    assert [s["dims"] for s in spec] == [[[1, None], [1, None], [32, 32]], [[1, 1]]]
    with pytest.raises(DataError, match="example input scale is a float; inputs must be tensors"):
        _example({"x": x, "scale": 0.5})


@pytest.mark.slow
def test_int4_weight_only_block_compiles_and_packages_with_its_gemm_template(tmp_path):
    """A transformer block whose Linears run on the int4 kernel: with GEMM autotuning, PyTorch 2.13's AMX int4
    template cannot fuse the 3-D epilogues that follow, so both paths compile without epilogue fusion."""
    from shrink.quant import WeightOnly, compile_int8, to_torch_weight_only

    torch.manual_seed(0)
    model = _Block().eval()
    q = shrink.quantize(model, [WeightOnly(bits=4, group_size=32)])
    real, converted, left = to_torch_weight_only(q)
    assert (converted, left) == (5, 0) and "int4 weight-only (PyTorch packed-weight" in real.shrink_execution
    x = {"x": torch.randn(3, 6, 32), "scale": torch.ones(1)}
    with torch.no_grad():
        eager = real(**x)
    compiled = compile_int8(real, warmup=[x])  # autotuned GEMMs: the int4 template is among the choices
    assert torch.allclose(compiled(**x), eager, atol=1e-2, rtol=1e-2)
    path = package_int8(real, tmp_path / "int4.pt2", x)
    loaded = load_int8_package(path)
    assert "int4 weight-only" in loaded.shrink_execution
    assert torch.allclose(loaded(**x), eager, atol=1e-2, rtol=1e-2)
