"""Asymmetric int4 groups (a zero point per group): packed and stored exactly, chosen by round to nearest, GPTQ, AWQ
and SignRound, and run on ONNX Runtime's MatMulNBits (its zero_points input) and PyTorch's int4 kernels."""

import collections

import onnx
import pytest
import torch
from torch import nn

import shrink
from shrink.errors import ConfigError
from shrink.export.artifact import artifact_bytes
from shrink.export.onnx import OnnxModel
from shrink.quant import (
    AWQ,
    GPTQ,
    Int8Static,
    PackedLinear,
    PreparedLinear,
    SignRound,
    WeightOnly,
    to_torch_weight_only,
)
from shrink.quant.algorithms.block_rounding import BlockCall, RoundingLinear, learn_block
from shrink.quant.algorithms.group_rounding import SCALE_DTYPE, dequantize_groups, rtn_codes
from shrink.quant.layers.packed import PackedWeight
from shrink.quant.runtimes.widen import widen_to_int8
from shrink.select import Selector

W4A = {"bits": 4, "group_size": 32, "asymmetric": True}


class _Skewed(nn.Module):
    """Two Linears whose weights lean to one side (a shifted distribution), where a symmetric grid wastes levels."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 96)
        self.fc2 = nn.Linear(96, 32)
        with torch.no_grad():
            for fc in (self.fc1, self.fc2):
                fc.weight.copy_(fc.weight.abs() * 2 - 0.3 * fc.weight.abs().max())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    return _Skewed().eval()


def _data(seed: int, n: int = 6) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 64, generator=g) * torch.logspace(-1, 1, 64) for _ in range(n)]


def _error(model: nn.Module, ref: nn.Module, data: list[torch.Tensor]) -> float:
    with torch.no_grad():
        return float(sum((model(x) - ref(x)).pow(2).sum() for x in data) / sum(ref(x).pow(2).sum() for x in data))


def test_packed_zero_points_round_trip_with_an_odd_group_count():
    torch.manual_seed(0)
    w = torch.randn(8, 96)  # three groups of 32: the zero points take a pad nibble
    codes, scales, zeros = rtn_codes(w, 4, 32, SCALE_DTYPE, asymmetric=True)
    assert zeros is not None and int(zeros.min()) >= -8 and int(zeros.max()) <= 7
    packed = PackedWeight(8, 96, 4, 32, asymmetric=True)
    packed.set_codes(codes, scales, zeros)
    assert packed.zeros is not None and tuple(packed.zeros.shape) == (8, 2)
    assert torch.equal(packed.zero_points(), zeros.to(torch.int8))
    assert torch.equal(packed.dequantize(), dequantize_groups(codes, scales, zeros))
    assert (packed.dequantize() - w).abs().max() <= scales.max() / 2 + 1e-6
    assert PackedWeight.shrink_from_manifest(packed.shrink_manifest()).asymmetric


def test_packed_weights_refuse_what_their_grid_cannot_hold():
    codes, scales, zeros = rtn_codes(torch.randn(4, 64), 4, 32, SCALE_DTYPE, asymmetric=True)
    with pytest.raises(ConfigError, match="needs zero points"):
        PackedWeight(4, 64, 4, 32, asymmetric=True).set_codes(codes, scales)
    with pytest.raises(ConfigError, match="is symmetric and takes no zero points"):
        PackedWeight(4, 64, 4, 32).set_codes(codes, scales, zeros)
    with pytest.raises(ConfigError, match="zero points on int4 grids only"):
        PackedWeight(4, 64, 8, 32, asymmetric=True)
    for config in (WeightOnly, GPTQ, AWQ, SignRound):
        with pytest.raises(ValueError, match="asymmetric grids .* int4 weights only, got bits=8"):
            config(bits=8, asymmetric=True)


def test_asymmetric_round_to_nearest_beats_symmetric_on_skewed_weights_and_saves_exactly(net, tmp_path):
    sym = shrink.quantize(net, WeightOnly(bits=4, group_size=32), progress=False)
    asym = shrink.quantize(net, WeightOnly(**W4A), progress=False)
    data = _data(1)
    assert _error(asym, net, data) < 0.7 * _error(sym, net, data)
    assert isinstance(asym.fc1, PackedLinear) and asym.fc1.packed.asymmetric
    # half a byte per group more: 96 rows x 1 byte (2 groups) + 32 rows x 2 bytes (3 groups, padded)
    assert 0 < artifact_bytes(asym) - artifact_bytes(sym) <= 96 * 1 + 32 * 2 + 512  # + the manifest's words
    back = shrink.load(shrink.save(asym, tmp_path / "w4a.shrink"), _Skewed)
    x = _data(2, 1)[0]
    assert torch.equal(back(x), asym(x))


@pytest.mark.parametrize("compute,tol", [("float", 1e-4), ("int8", 0.03)])
def test_onnx_passes_the_zero_points_to_matmulnbits(net, tmp_path, compute, tol):
    q = shrink.quantize(net, WeightOnly(**W4A, onnx_compute=compute), progress=False)
    x = _data(3, 1)[0]
    path = shrink.export.onnx(q, tmp_path / "w4a.onnx", x)
    nodes = [n for n in onnx.load(str(path)).graph.node if n.op_type == "MatMulNBits"]
    assert len(nodes) == 2 and all(len(n.input) == 4 and n.input[3] for n in nodes)  # A, B, scales, zero_points
    session = OnnxModel(path, threads=1)
    for batch in (x, x[:1]):
        out, ref = torch.as_tensor(session(batch)), q(batch)
        assert ((out - ref).norm() / ref.norm()) < tol


def test_pytorch_int4_kernels_and_widened_int8_keep_the_zero_points(net):
    q = shrink.quantize(net, WeightOnly(**W4A), progress=False)
    real, converted, left = to_torch_weight_only(q)
    assert converted == 2 and left == 0
    assert torch.equal(real.fc1.zero_points, q.fc1.packed.zero_points())
    x = _data(4, 1)[0]
    with torch.no_grad():
        ref = q(x)
        for model in (real, widen_to_int8(q)[0]):
            assert ((model(x).float() - ref).norm() / ref.norm()) < 0.03


def test_gptq_and_awq_on_asymmetric_grids_are_stored_exactly(net):
    calibration = _data(5)
    prepared = shrink.quantize(net, [AWQ(**W4A), GPTQ(**W4A)], calibration=calibration, progress=False)
    assert isinstance(prepared.fc1, PreparedLinear) and prepared.fc1.weight_zero is not None
    stored = shrink.quantize(prepared, [WeightOnly(**W4A)], progress=False)
    x = _data(6, 1)[0]
    with torch.no_grad():
        torch.testing.assert_close(stored(x), prepared(x))
    rtn = shrink.quantize(net, WeightOnly(**W4A), progress=False)
    assert _error(stored, net, _data(7)) < _error(rtn, net, _data(7))
    with pytest.raises(ConfigError, match="on an asymmetric grid, but this stage stores a symmetric one"):
        shrink.quantize(prepared, [WeightOnly(bits=4, group_size=32)], progress=False)
    sym = shrink.quantize(net, [GPTQ(bits=4, group_size=32)], calibration=calibration, progress=False)
    with pytest.raises(ConfigError, match="on a symmetric grid, but this stage stores an asymmetric one"):
        shrink.quantize(sym, [WeightOnly(**W4A)], progress=False)


def test_gptq_asymmetric_grid_is_refused_by_the_int8_stages(net):
    per_row = shrink.quantize(net, [GPTQ(bits=4, asymmetric=True)], calibration=_data(5), progress=False)
    with pytest.raises(ConfigError, match="asymmetric grid, which only weight_only stores"):
        shrink.quantize(per_row, [Int8Static(weight_bits=4)], calibration=_data(5), progress=False)


def test_untrained_asymmetric_rounding_is_round_to_nearest():
    torch.manual_seed(0)
    layer = PreparedLinear.from_linear(nn.Linear(64, 16))
    codes, scales, zeros = RoundingLinear(layer, 4, 32, 0.5, asymmetric=True).codes()
    expected = rtn_codes(layer.weight.detach(), 4, 32, SCALE_DTYPE, asymmetric=True)
    assert torch.equal(codes, expected.codes) and torch.equal(scales, expected.scales)
    assert zeros is not None and torch.equal(zeros, expected.zeros)


def test_learned_asymmetric_rounding_lowers_the_block_error():
    torch.manual_seed(0)
    block = nn.Sequential(PreparedLinear.from_linear(nn.Linear(64, 128)), nn.GELU())
    calls = [BlockCall((torch.randn(8, 64) * torch.logspace(-1, 1, 64),), {}, None) for _ in range(4)]
    with torch.no_grad():
        targets = [c.run(block) for c in calls]
    rounding = {"0": RoundingLinear(block[0], 4, 32, 0.5, asymmetric=True)}
    block[0] = rounding["0"]
    before, after = learn_block(block, rounding, calls, targets, steps=150, lr=0.005)
    assert after < 0.85 * before  # 0.0076 -> 0.0059 when written
    assert rounding["0"].factor_low is not None and bool((rounding["0"].factor_low < 1).any())
    _, scales, zeros = rounding["0"].codes()
    assert zeros is not None and zeros.shape == scales.shape == (128, 2)


def test_signround_asymmetric_on_an_encoder_is_stored_exactly():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
    )
    model = BertModel(config).eval()
    g = torch.Generator().manual_seed(0)
    calibration = [{"input_ids": torch.randint(1, 64, (4, 10), generator=g)} for _ in range(4)]
    grid = {**W4A, "selector": Selector(types=("Linear",), ignore=("re:.*pooler.*",))}
    prepared = shrink.quantize(model, [AWQ(**grid), SignRound(steps=20, **grid)], calibration=calibration)
    stored = shrink.quantize(prepared, [WeightOnly(**grid)], progress=False)
    kinds = collections.Counter(type(m).__name__ for m in stored.modules())
    assert kinds["PackedLinear"] == 12
    ids = torch.randint(1, 64, (2, 10), generator=g)
    with torch.no_grad():
        torch.testing.assert_close(stored(input_ids=ids).last_hidden_state, prepared(input_ids=ids).last_hidden_state)
