"""int4 weight-only: awq and gptq stages in front of weight_only, exact save / load, and the ONNX Runtime int4
kernels (MatMulNBits for Linears, GatherBlockQuantized for tables)."""

import collections

import onnx
import pytest
import torch
from torch import nn

import shrink
from shrink.errors import ConfigError, DataError
from shrink.export.onnx import OnnxModel
from shrink.quant import AWQ, GPTQ, PackedLinear, WeightOnly, ort_optimized_ops
from shrink.quant.algorithms.group_rounding import (
    CLIP_RATIOS,
    awq_input_scales,
    dequantize_groups,
    gptq_group_codes,
    rtn_codes,
)


class _Tokens(nn.Module):
    """An embedding table and two Linears, with input channels of very different scales (as in transformers)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 64)
        self.fc1 = nn.Linear(64, 128)
        self.fc2 = nn.Linear(128, 64)
        with torch.no_grad():
            self.emb.weight.mul_(torch.logspace(-1, 1, 64))  # outlier channels

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.nn.functional.gelu(self.fc1(self.emb(ids))))


def _data(seed: int, n: int = 8) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 100, (4, 12), generator=g) for _ in range(n)]


def _error(model: nn.Module, ref: nn.Module, data: list[torch.Tensor]) -> float:
    with torch.no_grad():
        return float(sum((model(x) - ref(x)).pow(2).sum() for x in data) / sum(ref(x).pow(2).sum() for x in data))


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    return _Tokens().eval()


def test_awq_scales_reduce_output_error_on_outlier_channels():
    torch.manual_seed(0)
    x = torch.randn(512, 64) * torch.logspace(-1, 1.5, 64)
    w = torch.randn(32, 64)
    s, alpha = awq_input_scales(x, w, 4, 32)
    assert s.shape == (64,) and alpha > 0
    plain = dequantize_groups(*rtn_codes(w, 4, 32))
    scaled = dequantize_groups(*rtn_codes(w * s, 4, 32))
    ref = x @ w.T
    assert ((x / s) @ scaled.T - ref).norm() < 0.95 * (x @ plain.T - ref).norm()


W4 = {"bits": 4, "group_size": 32}
AWQ_GPTQ_W4 = [AWQ(**W4), GPTQ(**W4), WeightOnly(**W4)]


def test_gptq_and_awq_beat_round_to_nearest_on_held_out_data(net):
    calib, test = _data(1), _data(2)
    lin = {"selector": {"types": ["Linear"]}}
    errs = {}
    for name, recipe in {
        "rtn": [WeightOnly(**W4, **lin)],
        "gptq": [GPTQ(**W4), WeightOnly(**W4, **lin)],
        "awq": [AWQ(**W4), WeightOnly(**W4, **lin)],
        "awq+gptq": [AWQ(**W4), GPTQ(**W4), WeightOnly(**W4, **lin)],
    }.items():
        q = shrink.quantize(net, recipe, calibration=calib)
        errs[name] = _error(q, net, test)
    assert max(errs["gptq"], errs["awq"], errs["awq+gptq"]) < errs["rtn"]
    assert errs["awq+gptq"] < 0.05


def test_gptq_act_order_keeps_static_groups_and_feeds_the_error_forward():
    torch.manual_seed(4)
    energy = torch.logspace(-1, 1, 128)[torch.randperm(128)]  # inputs of very different energy, in no order
    x = (torch.randn(4096, 16) @ torch.randn(16, 128) + 0.1 * torch.randn(4096, 128)) * energy
    w = torch.randn(48, 128)
    h = (x.T.double() @ x.double()) / x.shape[0]
    codes, scales, _ = gptq_group_codes(w, h, 4, 32, act_order=True)
    assert torch.equal(scales, rtn_codes(w, 4, 32)[1])  # static groups: the scales of the unrounded weights
    assert codes.min() >= -8 and codes.max() <= 7
    err = lambda c, s, z=None: ((x @ (dequantize_groups(c, s, z) - w).T).norm() / (x @ w.T).norm()).item()  # noqa: E731
    assert err(codes, scales) < 0.7 * err(*rtn_codes(w, 4, 32))
    # without correlation between inputs there is no error to feed forward: it rounds to nearest
    eye = torch.eye(128, dtype=torch.float64) * energy.double() ** 2
    assert torch.equal(gptq_group_codes(w, eye, 4, 32, damp=0.0, act_order=True)[0], rtn_codes(w, 4, 32)[0])


def test_gptq_act_order_stage_and_its_errors(net):
    calib, test = _data(1), _data(2)
    lin = {"selector": {"types": ["Linear"]}}
    rtn = _error(shrink.quantize(net, [WeightOnly(**W4, **lin)], calibration=calib), net, test)
    q = shrink.quantize(net, [GPTQ(**W4, act_order=True), WeightOnly(**W4, **lin)], calibration=calib)
    assert _error(q, net, test) < rtn
    with pytest.raises(ConfigError, match="act_order applies to group grids"):
        GPTQ(bits=8, act_order=True)


def _energy_error(w: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, energy: torch.Tensor) -> float:
    return float(((dequantize_groups(codes, scales) - w) ** 2 * energy).sum())


def test_clipped_scales_lower_the_energy_weighted_error():
    torch.manual_seed(5)
    w = torch.randn(64, 128)  # Gaussian groups, as after a rotation: no outlier worth a whole grid
    energy = torch.rand(128) + 0.1
    plain, clipped = rtn_codes(w, 4, 32), rtn_codes(w, 4, 32, energy=energy)
    assert _energy_error(w, *clipped[:2], energy) < 0.95 * _energy_error(w, *plain[:2], energy)
    ratios = clipped[1].abs() * 7 / w.reshape(64, -1, 32).abs().amax(-1)
    assert ratios.min() >= min(CLIP_RATIOS) - 1e-3 and (ratios < 0.99).float().mean() > 0.5  # most groups clip
    # the unclipped scale competes too: no group ends worse
    per_group = lambda c, s, z=None: ((dequantize_groups(c, s, z) - w) ** 2 * energy).reshape(64, -1, 32).sum(-1)  # noqa: E731
    assert torch.all(per_group(*clipped) <= per_group(*plain) + 1e-6)


def test_gptq_with_clipped_scales_searches_on_the_hessian_diagonal():
    torch.manual_seed(6)
    energy = torch.rand(128, dtype=torch.float64) + 0.1
    w = torch.randn(48, 128)
    # independent inputs: no error to feed forward, so GPTQ rounds to nearest, on the clipped scales of diag H
    h = torch.diag(energy)
    for act_order in (False, True):
        codes, scales, _ = gptq_group_codes(w, h, 4, 32, damp=0.0, act_order=act_order, clip=True)
        expected = rtn_codes(w, 4, 32, energy=energy)
        assert torch.equal(codes, expected[0]) and torch.allclose(scales, expected[1])
        assert not torch.equal(scales, gptq_group_codes(w, h, 4, 32, damp=0.0, act_order=act_order)[1])


def test_asymmetric_groups_spread_each_range_over_all_levels_with_zero_on_the_grid():
    torch.manual_seed(7)
    w = torch.randn(64, 128) + torch.linspace(-3, 3, 64)[:, None]  # rows shifted off zero: one-sided groups
    sym, asym = rtn_codes(w, 4, 32), rtn_codes(w, 4, 32, asymmetric=True)
    assert sym.zeros is None and asym.zeros is not None and asym.zeros.shape == asym.scales.shape
    assert torch.equal(asym.zeros, asym.zeros.round()) and asym.zeros.min() >= -8 and asym.zeros.max() <= 7
    assert asym.codes.min() >= -8 and asym.codes.max() <= 7
    error = lambda r: float((dequantize_groups(*r) - w).pow(2).sum())  # noqa: E731
    assert error(asym) < 0.6 * error(sym)
    groups = w.reshape(64, -1, 32)
    spread = (groups.amax(-1).clamp(min=0) - groups.amin(-1).clamp(max=0)) / 15
    assert torch.allclose(asym.scales, spread, rtol=1e-6)  # the whole range (zero included) over 15 steps
    zero = torch.zeros(64, 128)
    zero[:, ::32] = 1.0  # a weight of exactly 0 stays exactly 0
    q = rtn_codes(torch.where(zero.bool(), torch.zeros(()), w), 4, 32, asymmetric=True)
    assert torch.all(dequantize_groups(*q)[zero.bool()] == 0)


def test_asymmetric_gptq_rounds_to_nearest_without_correlation_and_clips_on_the_diagonal():
    torch.manual_seed(8)
    energy = torch.rand(128, dtype=torch.float64) + 0.1
    w = torch.randn(48, 128) + 0.5
    h = torch.diag(energy)
    for act_order in (False, True):
        for clip in (False, True):
            got = gptq_group_codes(w, h, 4, 32, damp=0.0, act_order=act_order, clip=clip, asymmetric=True)
            expected = rtn_codes(w, 4, 32, energy=energy if clip else None, asymmetric=True)
            assert torch.equal(got.codes, expected.codes) and torch.allclose(got.scales, expected.scales)
            assert torch.equal(got.zeros, expected.zeros)
    clipped, plain = rtn_codes(w, 4, 32, energy=energy, asymmetric=True), rtn_codes(w, 4, 32, asymmetric=True)
    per_group = lambda r: ((dequantize_groups(*r) - w) ** 2 * energy).reshape(48, -1, 32).sum(-1)  # noqa: E731
    assert torch.all(per_group(clipped) <= per_group(plain) + 1e-6)
    assert per_group(clipped).sum() < per_group(plain).sum()
    x = torch.randn(4096, 16) @ torch.randn(16, 128) + 0.1 * torch.randn(4096, 128)  # correlated inputs
    hx = (x.T.double() @ x.double()) / x.shape[0]
    out_err = lambda r: float((x @ (dequantize_groups(*r) - w).T).norm())  # noqa: E731
    assert out_err(gptq_group_codes(w, hx, 4, 32, asymmetric=True)) < 0.7 * out_err(plain)


def test_gptq_clip_stage_and_its_errors(net):
    calib, test = _data(1), _data(2)
    lin = {"selector": {"types": ["Linear"]}}
    gptq = _error(shrink.quantize(net, [GPTQ(**W4), WeightOnly(**W4, **lin)], calibration=calib), net, test)
    q = shrink.quantize(net, [GPTQ(**W4, clip=True), WeightOnly(**W4, **lin)], calibration=calib)
    assert 0 < _error(q, net, test) != gptq
    with pytest.raises(ConfigError, match="clip applies to group grids"):
        GPTQ(bits=8, clip=True)


def test_learned_rounding_needs_calibration(net):
    for stage in (AWQ(), GPTQ(bits=4, group_size=32)):
        with pytest.raises(DataError, match="calibration data is required"):
            shrink.quantize(net, [stage, WeightOnly()])


@pytest.mark.parametrize("field", ["weight_rounding", "activation_aware"])
def test_weight_only_fields_that_became_stages_say_where(field):
    with pytest.raises(ConfigError, match=f"'{field}' is no longer a field of weight_only: list an? (gptq|awq) stage"):
        WeightOnly(**{field: True})


def test_weight_only_refuses_a_gptq_grid_of_another_shape(net):
    with pytest.raises(ConfigError, match="fc1.*groups of 32 inputs, but this stage stores one scale per row"):
        shrink.quantize(net, [GPTQ(**W4), WeightOnly(bits=4, group_size=None)], calibration=_data(1))
    with pytest.raises(ConfigError, match="fc1.*4-bit grid.*8 bits"):
        shrink.quantize(net, [GPTQ(**W4), WeightOnly(bits=8, group_size=32)], calibration=_data(1))
    with pytest.raises(ConfigError, match="groups of 32 inputs, which only weight_only stores"):
        shrink.quantize(net, [GPTQ(bits=8, group_size=32), shrink.quant.Int8Dynamic()], calibration=_data(1))


def test_weight_only_keeps_the_gptq_codes_exactly(net):
    prepared = shrink.quantize(net, [AWQ(**W4), GPTQ(**W4)], calibration=_data(1))
    q = shrink.quantize(prepared, WeightOnly(**W4, selector={"types": ["Linear"]}))
    assert torch.equal(q.fc1.packed.dequantize(), prepared.fc1.weight.detach())
    assert torch.equal(q.fc1.input_scale, prepared.fc1.input_smooth)
    x = _data(3, 1)[0]
    assert torch.allclose(q(x), prepared(x), atol=1e-5)


def test_per_row_int8_weights(net):
    q = shrink.quantize(net, [GPTQ(bits=8), WeightOnly(bits=8, group_size=None)], calibration=_data(1))
    assert q.fc1.packed.scales.shape == (128, 1) and q.emb.packed.scales.shape == (100, 1)
    assert _error(q, net, _data(2)) < 1e-3


def test_int4_per_row_onnx_export_names_the_block_rule(tmp_path):
    odd = nn.Sequential(nn.Linear(48, 8)).eval()
    q = shrink.quantize(odd, WeightOnly(bits=4, group_size=None))
    with pytest.raises(ConfigError, match="MatMulNBits needs groups of a power of two.*one scale per 48"):
        shrink.export.onnx(q, tmp_path / "odd.onnx", torch.randn(2, 48))


def test_save_load_is_exact_with_awq_scales(net, tmp_path):
    q = shrink.quantize(net, AWQ_GPTQ_W4, calibration=_data(1))
    assert isinstance(q.fc1, PackedLinear) and q.fc1.input_scale is not None
    back = shrink.load(shrink.save(q, tmp_path / "w4.shrink"), _Tokens)
    x = _data(3, 1)[0]
    assert torch.equal(back(x), q(x))
    assert back.fc1.onnx_compute == q.fc1.onnx_compute


@pytest.mark.parametrize("compute,tol", [("float", 1e-4), ("int8", 0.02)])
def test_onnx_runs_int4_kernels(net, tmp_path, compute, tol):
    q = shrink.quantize(net, [AWQ(**W4), GPTQ(**W4), WeightOnly(**W4, onnx_compute=compute)], calibration=_data(1))
    x = _data(4, 1)[0]
    path = shrink.export.onnx(q, tmp_path / "w4.onnx", x)
    graph = onnx.load(str(path)).graph
    ops = collections.Counter(n.op_type for n in graph.node)
    assert ops["MatMulNBits"] == 2 and ops["GatherBlockQuantized"] == 1
    inits = {i.name: i for i in graph.initializer}
    for node in (n for n in graph.node if n.op_type == "MatMulNBits"):
        packed = inits[node.input[1]]
        assert packed.data_type == onnx.TensorProto.UINT8 and list(packed.dims)[1:] == [packed.dims[1], 16]
    floats = [i for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    assert max(int(torch.tensor(list(i.dims)).prod()) for i in floats) <= 256  # biases and group scales only
    assert {"MatMulNBits", "GatherBlockQuantized"} <= set(ort_optimized_ops(path))
    session = OnnxModel(path, threads=1)
    for batch in (x, x[:1]):  # dynamic batch
        out, ref = torch.as_tensor(session(batch)), q(batch)
        assert ((out - ref).norm() / ref.norm()) < tol


def test_onnx_int4_file_is_small(net, tmp_path):
    x = _data(4, 1)[0]
    fp32 = shrink.export.onnx(net, tmp_path / "fp32.onnx", x).stat().st_size
    q = shrink.quantize(net, WeightOnly(bits=4, group_size=32))
    w4 = shrink.export.onnx(q, tmp_path / "w4.onnx", x).stat().st_size
    assert w4 < 0.2 * fp32


def test_bias_free_int4_linear_exports_and_runs(tmp_path):
    net = nn.Sequential(nn.Linear(64, 32, bias=False), nn.ReLU(), nn.Linear(32, 8)).eval()
    q = shrink.quantize(net, WeightOnly(bits=4, group_size=32))
    x = torch.randn(3, 64)
    path = shrink.export.onnx(q, tmp_path / "nobias.onnx", x)
    assert collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)["MatMulNBits"] == 2
    out = torch.as_tensor(OnnxModel(path, threads=1)(x))
    assert ((out - q(x)).norm() / q(x).norm()) < 0.02


def test_manifests_written_before_awq_fields_existed_still_build():
    old_manifest = {"in_features": 64, "out_features": 128, "bias": True, "bits": 4, "group_size": 32}
    layer = PackedLinear.shrink_from_manifest(old_manifest)
    assert layer.input_scale is None and layer.onnx_compute == "int8"


def test_scales_are_rounded_to_their_stored_dtype_before_the_codes():
    w = torch.randn(16, 64) * 1e-6  # tiny weights: fp16 scales would underflow without the floor
    codes, scales, _ = rtn_codes(w, 4, 32, torch.float16)
    assert torch.equal(scales, scales.half().float()) and (scales > 0).all()


def test_group_size_that_does_not_tile_a_layer_names_the_ones_that_do():
    model = nn.Sequential(nn.Linear(96, 8), nn.ReLU(), nn.Linear(8, 4))
    with pytest.raises(
        ConfigError, match=r"'0' has 96 inputs, not divisible by group_size 64; choose group_size 32, or None"
    ):
        shrink.quantize(model, WeightOnly(bits=4, group_size=64, selector={"include": ("0",)}))
    with pytest.raises(ConfigError, match=r"'2' has 8 inputs.*choose group_size None \(one scale per row\)"):
        shrink.quantize(model, WeightOnly(bits=4, group_size=32, selector={"include": ("2",)}))
