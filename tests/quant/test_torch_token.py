"""Per-token int8 Linear on PyTorch's oneDNN kernels, the converted model and its compiled form."""

import pytest
import torch
from torch import nn

import shrink
from shrink.errors import UnsupportedOpError
from shrink.quant import (
    GPTQ,
    CompiledInt8,
    Int8Dynamic,
    Int8Static,
    QuantLinear,
    SmoothQuant,
    TokenInt8Linear,
    compile_int8,
    to_torch_int8,
)
from shrink.quant.numerics.qparams import dynamic_fake_quant
from shrink.quant.runtimes.torch_backend import on_kernel_codes
from shrink.quant.runtimes.torch_token import kernel_codes, onednn_int8_available
from shrink.select import Selector

pytestmark = pytest.mark.skipif(not onednn_int8_available(), reason="oneDNN int8 linear (x86 PyTorch) missing")


def _token_layer(k: int = 48, n: int = 40, bias: bool = True, relu: bool = False, smooth: bool = False) -> QuantLinear:
    g = torch.Generator().manual_seed(0)
    layer = QuantLinear(k, n, bias, 8, "dynamic_token", relu=relu, smooth=smooth)
    layer.weight_int.copy_(torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8))
    layer.weight_scale.copy_(torch.rand(n, generator=g) * 0.02 + 0.001)
    if bias:
        layer.bias.data.copy_(torch.randn(n, generator=g))
    if smooth:
        layer.input_smooth.copy_(torch.rand(k, generator=g) + 0.5)
    return layer.eval()


def _inputs(*shape: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g)
    x[..., 3] *= 20  # an outlier channel, and rows of very different ranges
    return x * torch.linspace(0.1, 5.0, shape[-2]).unsqueeze(-1)


def test_integer_arithmetic_is_exact():
    layer = _token_layer()
    real = TokenInt8Linear(layer)
    x = _inputs(2, 7, 48)
    # reference in exact integers: uint8 row codes times the int8 weight codes the kernel takes on this CPU (the
    # layer's own, or where u8 x s8 pairs saturate, 7-bit ones), accumulated in int64
    codes, weight_scale = kernel_codes(layer.weight_int, layer.weight_scale)
    rows = x.reshape(-1, 48)
    lo, hi = rows.amin(-1, keepdim=True), rows.amax(-1, keepdim=True)
    scale = ((hi - lo) * (1.0 / 255.0)).clamp(min=1e-12)
    q = torch.round((rows - lo) * scale.reciprocal()).clamp(0, 255).long()
    acc = q @ codes.long().t()
    assert int(q.min()) >= 0 and int(q.max()) <= 255
    colsum = codes.long().sum(1).double()
    w = weight_scale.double()
    ref = acc.double() * w * scale.double() + lo.double() * colsum * w + layer.bias.detach().double()
    out = real(x).reshape(-1, 40).double()
    assert float((out - ref).abs().max()) <= 1e-4 * float(ref.abs().max())


@pytest.mark.parametrize("bias,relu,smooth", [(True, False, False), (False, True, False), (True, False, True)])
def test_matches_the_simulated_layer(bias, relu, smooth):
    layer = _token_layer(bias=bias, relu=relu, smooth=smooth)
    x = _inputs(3, 5, 48)
    with torch.no_grad():
        sim, real = on_kernel_codes(layer)(x), TokenInt8Linear(layer)(x)
    assert real.shape == sim.shape == (3, 5, 40)
    assert float((real - sim).abs().max()) <= 1e-4 * float(sim.abs().max())
    if relu:
        assert float(real.min()) >= 0.0


@pytest.mark.parametrize("shape", [(48,), (5, 48), (2, 3, 5, 48)])
def test_any_number_of_leading_dims(shape):
    # rows stay in the input's shape (no reshape to 2-D), a single vector included
    layer = _token_layer()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2)) * 3
    with torch.no_grad():
        sim, real = on_kernel_codes(layer)(x), TokenInt8Linear(layer)(x)
    assert real.shape == sim.shape == (*shape[:-1], 40)
    assert float((real - sim).abs().max()) <= 1e-4 * float(sim.abs().max())


def test_simulation_is_what_the_kernel_sees():
    # the fake-quant rows are the values the integer kernel multiplies: within half a step of the input
    x = _inputs(4, 6, 48)
    fq = dynamic_fake_quant(x, per_token=True)
    step = (x.amax(-1, keepdim=True) - x.amin(-1, keepdim=True)) / 255
    assert bool(((fq - x).abs() <= step / 2 + 1e-6).all())


def test_wrong_layer_kind_and_wrong_input_name_the_layer():
    from shrink.errors import DataError

    static = QuantLinear(8, 4, True, 8, "static")
    with pytest.raises(UnsupportedOpError, match="encoder.fc"):
        TokenInt8Linear(static, "encoder.fc")
    real = TokenInt8Linear(_token_layer(), "encoder.fc")
    with pytest.raises(DataError, match=r"encoder.fc: input of shape \(2, 5, 47\), expected \(..., 48\)"):
        real(torch.randn(2, 5, 47))


def _quantized_mlp() -> tuple[nn.Module, nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 16)).eval()
    calib = [torch.randn(4, 9, 32) for _ in range(2)]
    cfg = [SmoothQuant(alpha=0.5, per_token=True), GPTQ(), Int8Dynamic(granularity="token")]
    return model, shrink.quantize(model, cfg, calibration=calib), calib


def test_to_torch_int8_converts_per_token_layers():
    model, q, calib = _quantized_mlp()
    real = to_torch_int8(q)
    assert isinstance(real[0], TokenInt8Linear) and isinstance(real[2], TokenInt8Linear)
    assert isinstance(q[0], QuantLinear)  # the quantized model is left as it was
    assert "per-token" in real.shrink_execution and "real" in real.shrink_execution
    x = torch.randn(5, 9, 32)
    with torch.no_grad():
        ref, sim, out = model(x), on_kernel_codes(q)(x), real(x)
    assert float((out - sim).abs().max()) <= 1e-3 * float(sim.abs().max())
    cos = nn.functional.cosine_similarity(out.reshape(-1, 16), ref.reshape(-1, 16)).mean()
    assert float(cos) > 0.999


@pytest.mark.slow
def test_compiled_model_agrees_with_eager_for_any_batch_shape():
    _, q, calib = _quantized_mlp()
    real = to_torch_int8(q)
    compiled = compile_int8(real, warmup=[torch.randn(4, 9, 32), torch.randn(1, 9, 32)])
    assert isinstance(compiled, CompiledInt8) and compiled.compile_seconds > 0
    assert "compiled" in compiled.shrink_execution
    for shape in ((4, 9, 32), (1, 5, 32), (3, 11, 32)):  # dynamic shapes: no recompilation per sequence length
        x = torch.randn(*shape)
        with torch.no_grad():
            eager = real(x)
        out = compiled(x)
        assert out.shape == eager.shape
        assert float((out - eager).abs().max()) <= 1e-3 * float(eager.abs().max())
    compiled.skip_guards = True
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        eager = real(x)
    assert float((compiled(x) - eager).abs().max()) <= 1e-3 * float(eager.abs().max())
    # an input kind the warm-up did not compile (2-D): compiled with full guards again, with a warning
    x2 = torch.randn(6, 32)
    with pytest.warns(UserWarning, match="needed a new compilation"):
        out = compiled(x2)
    with torch.no_grad():
        assert float((out - real(x2)).abs().max()) <= 1e-3 * float(real(x2).abs().max())
    assert not compiled.skip_guards


class _Attention(nn.Module):
    """Three projections of one input (query / key / value), as in a transformer block, then a mixer."""

    def __init__(self) -> None:
        super().__init__()
        self.query, self.key, self.value = nn.Linear(32, 16), nn.Linear(32, 16), nn.Linear(32, 24)
        self.out = nn.Linear(24, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.query(x), self.key(x), self.value(x)
        attn = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1)
        return self.out(attn @ v)


def _quantized_attention(smooth: float | None = 0.5) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    model = _Attention().eval()
    calib = [torch.randn(3, 6, 32) * torch.linspace(0.2, 4.0, 32) for _ in range(2)]
    smoothing = [SmoothQuant(alpha=smooth, per_token=True)] if smooth is not None else []
    return model, shrink.quantize(model, [*smoothing, Int8Dynamic(granularity="token")], calibration=calib)


def test_shared_input_groups_find_the_projections_of_one_input():
    from shrink.data import shared_input_groups

    model = _Attention().eval()
    groups = shared_input_groups(model, ["query", "key", "value", "out"], [torch.randn(2, 5, 32)] * 2)
    assert groups == [["query", "key", "value"]]


def test_smoothing_shares_factors_across_one_input():
    _, q = _quantized_attention()
    assert torch.equal(q.query.input_smooth, q.key.input_smooth) and torch.equal(
        q.key.input_smooth, q.value.input_smooth
    )
    assert not torch.equal(q.out.input_smooth[:24], q.query.input_smooth[:24])


@pytest.mark.parametrize("smooth", [None, 0.5])
def test_merged_projections_match_separate_ones(smooth):
    from shrink.quant import SharedInputMember

    _, q = _quantized_attention(smooth)
    x = torch.randn(2, 7, 32)
    separate, merged = to_torch_int8(q), to_torch_int8(q, example_inputs=x)
    assert isinstance(merged.query, SharedInputMember) and isinstance(merged.out, TokenInt8Linear)
    assert "1 groups reading one input merged" in merged.shrink_execution
    for shape in ((2, 7, 32), (1, 3, 32)):
        y = torch.randn(*shape)
        with torch.no_grad():
            a, b = separate(y), merged(y)
        assert float((a - b).abs().max()) <= 1e-4 * float(a.abs().max())
    assert merged.query.shared._input is None  # nothing is held between forwards


def test_embedding_tables_are_quantized_by_weight_only_and_int8_static_refuses_them():
    from shrink.errors import UnsupportedOpError
    from shrink.quant import PackedEmbedding, WeightOnly

    model = nn.Sequential(nn.Embedding(50, 64), nn.Linear(64, 4))
    calib = [torch.randint(0, 50, (4, 6))]
    tables = Selector(types=("Embedding",))
    q = shrink.quantize(model, [WeightOnly(bits=8, group_size=32, selector=tables), Int8Static()], calibration=calib)
    assert isinstance(q[0], PackedEmbedding) and q[0].packed.scales.shape == (50, 2)
    assert isinstance(q[1], QuantLinear)
    row = shrink.quantize(model, WeightOnly(bits=8, group_size=64, selector=tables))
    ids = torch.arange(50)
    with torch.no_grad():
        err = lambda m: float((m[0](ids) - model[0](ids)).abs().max())  # noqa: E731
    assert err(q) <= err(row)
    both = Selector(types=("Linear", "Embedding"))
    with pytest.raises(UnsupportedOpError, match="int8_static.selector: layer '0' is a Embedding"):
        shrink.quantize(model, Int8Static(selector=both), calibration=calib)


def test_smoothing_alpha_search_picks_the_best_grid_alpha():
    from shrink.quant.algorithms.smooth import ALPHA_GRID, smoothing_factors

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 48)).eval()  # one layer: the search's objective is the model's error
    calib = [torch.randn(4, 9, 32) * torch.linspace(0.1, 3.0, 32) for _ in range(2)]
    calib[0][..., 5] *= 30  # an outlier channel

    def smoothed(alpha: float | str) -> nn.Module:
        steps = [SmoothQuant(alpha=alpha, per_token=True), Int8Dynamic(granularity="token")]
        return shrink.quantize(model, steps, calibration=calib)

    auto = smoothed("auto")
    x = torch.cat(calib)
    with torch.no_grad():
        ref = model(x)
        errors = {a: float((smoothed(a)(x) - ref).pow(2).mean()) for a in ALPHA_GRID}
        err_auto = float((auto(x) - ref).pow(2).mean())
    assert err_auto <= 1.0001 * min(errors.values())
    assert max(errors.values()) > 1.01 * min(errors.values())  # the choice matters on this data
    # the chosen factors are those of one grid alpha
    absmax = x.reshape(-1, 32).abs().amax(0)
    candidates = [1.0 / smoothing_factors(absmax, model[0].weight, a) for a in ALPHA_GRID]
    assert any(torch.allclose(auto[0].input_smooth, c, rtol=1e-4) for c in candidates)


class _Gelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(self.fc(x))


def test_inputs_made_inside_or_outside_inference_mode_find_the_same_graph():
    """Dynamo guards on a tensor being an inference tensor; each graph holds its own frozen weights."""
    from torch._dynamo.utils import counters

    model = _Gelu().eval()
    x = torch.randn(3, 8)  # a normal tensor
    compiled = compile_int8(model, warmup=[x], max_autotune=False)
    graphs = counters["stats"]["unique_graphs"]
    with torch.inference_mode():
        y = torch.randn(3, 8)  # an inference tensor
        assert torch.allclose(compiled(y), model(y), atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-5)
    assert counters["stats"]["unique_graphs"] == graphs
    assert not x.is_inference()  # the caller's tensor is left as it was


def test_many_models_of_one_class_each_get_compiled_graphs():
    """Dynamo's recompile limit (8 per function) would send the ninth model of a class to eager, silently."""
    from torch._dynamo import config
    from torch._dynamo.utils import counters

    limit = config.recompile_limit
    x = torch.randn(3, 8)
    for _ in range(limit + 2):
        before = counters["frames"]["ok"]
        model = _Gelu().eval()
        compiled = compile_int8(model, warmup=[x], max_autotune=False)
        assert counters["frames"]["ok"] > before, "the warm-up compiled nothing: the model runs eager"
        with torch.no_grad():
            assert torch.allclose(compiled(x), model(x), atol=1e-5)
    assert config.recompile_limit == limit  # lifted only around the compiled model's calls
