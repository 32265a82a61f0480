"""signround: rounding learned block by block (offsets and scale factors by signed gradient steps), stored exactly
by weight_only, on encoder and decoder blocks found by themselves or named."""

import pytest
import torch
from torch import nn

import shrink
from shrink.errors import ConfigError, DataError
from shrink.quant import GPTQ, PackedLinear, PreparedLinear, SignRound, WeightOnly
from shrink.quant.algorithms.block_rounding import BlockCall, RoundingLinear, learn_block
from shrink.quant.algorithms.group_rounding import SCALE_DTYPE
from shrink.quant.signround import find_blocks
from shrink.select import Selector

ENCODER = Selector(types=("Linear",), ignore=("re:.*pooler.*",))


class _Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = PreparedLinear.from_linear(nn.Linear(64, 128))
        self.fc2 = PreparedLinear.from_linear(nn.Linear(128, 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(x)))


def test_learned_rounding_lowers_the_block_error_of_round_to_nearest():
    torch.manual_seed(0)
    block = _Mlp()
    calls = [BlockCall((torch.randn(8, 64) * torch.logspace(-1, 1, 64),), {}, None) for _ in range(4)]
    with torch.no_grad():
        targets = [c.run(block) for c in calls]
    rounding = {n: RoundingLinear(getattr(block, n), 4, 32, 0.5) for n in ("fc1", "fc2")}
    for n, r in rounding.items():
        setattr(block, n, r)
    before, after = learn_block(block, rounding, calls, targets, steps=150, lr=0.01)
    assert after < 0.7 * before
    codes, scale, zeros = rounding["fc1"].codes()
    assert zeros is None and codes.dtype == torch.int8 and codes.shape == (128, 64) and scale.shape == (128, 2)
    assert int(codes.min()) >= -8 and int(codes.max()) <= 7
    assert torch.equal(scale, scale.to(SCALE_DTYPE).float())  # as stored
    assert all(p.requires_grad for p in rounding["fc1"].layer.parameters())  # the block's own parameters restored


def test_untrained_rounding_is_round_to_nearest_on_the_largest_weight():
    torch.manual_seed(0)
    layer = PreparedLinear.from_linear(nn.Linear(64, 16))
    codes, scale, _ = RoundingLinear(layer, 4, 32, 0.5).codes()
    w = layer.weight.detach().reshape(16, 2, 32)
    expected = w.abs().amax(-1) / 7
    assert torch.allclose(scale, expected, rtol=1e-3)
    assert torch.equal(codes.reshape(16, 2, 32).float(), torch.round(w / scale[..., None]).clamp(-8, 7))


def _bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
    )
    return BertModel(config).eval()


def _batches(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        mask = torch.ones(4, 10, dtype=torch.long)
        mask[1:, 7:] = 0  # padding at the end of three rows
        out.append({"input_ids": torch.randint(1, 64, (4, 10), generator=g), "attention_mask": mask})
    return out


def _error(model: nn.Module, ref: nn.Module, batches: list[dict[str, torch.Tensor]]) -> float:
    total = 0.0
    with torch.no_grad():
        for b in batches:
            diff = model(**b).last_hidden_state - ref(**b).last_hidden_state
            total += float(diff[b["attention_mask"].bool()].pow(2).sum())
    return total


def test_signround_on_an_encoder_is_stored_exactly_and_beats_round_to_nearest():
    model, calibration = _bert(), _batches(6, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grid = {"bits": 4, "group_size": 32, "selector": ENCODER}
    prepared = shrink.quantize(model, [SignRound(steps=60, **grid)], calibration=calibration, progress=False)
    stored = shrink.quantize(prepared, [WeightOnly(**grid)], calibration=calibration, progress=False)
    rtn = shrink.quantize(model, [WeightOnly(**grid)], progress=False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the user's model untouched
    linears = [m for n, m in stored.named_modules() if isinstance(m, PackedLinear)]
    assert len(linears) == 12  # 6 Linears per layer, the pooler left float
    batches = _batches(3, 1)
    with torch.no_grad():
        for b in batches:  # weight_only keeps exactly the learned codes
            torch.testing.assert_close(stored(**b).last_hidden_state, prepared(**b).last_hidden_state)
    assert _error(stored, model, calibration) < _error(rtn, model, calibration)


def test_signround_on_a_decoder_with_a_cache_and_named_blocks():
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, use_cache=True,
    )  # fmt: skip
    model = LlamaModel(config).eval()
    calibration = [{"input_ids": torch.randint(0, 64, (2, 12))} for _ in range(3)]
    cfg = SignRound(bits=4, group_size=64, steps=5, selector=Selector(types=("Linear",)), blocks=r"layers\.\d+")
    q = shrink.quantize(model, [cfg], calibration=calibration, progress=False)
    layer = q.layers[1].mlp.down_proj
    assert isinstance(layer, PreparedLinear) and layer.grid_bits == 4 and layer.grid_group == 64
    codes = layer.weight.detach().reshape(64, 2, 64) / layer.weight_scale[..., None]
    assert torch.allclose(codes, codes.round(), atol=1e-3)


def test_blocks_are_found_and_layers_outside_them_refused():
    model = _bert()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    found = find_blocks(model, [n for n in names if "pooler" not in n], None)
    assert list(found) == ["encoder.layer.0", "encoder.layer.1"] and len(found["encoder.layer.0"]) == 6
    with pytest.raises(ConfigError, match="'pooler.dense' lies in no block"):
        find_blocks(model, names, None)
    with pytest.raises(ConfigError, match="lies inside block 'encoder.layer.0'"):
        find_blocks(model, names, r"encoder\.layer\.0(\.attention)?")
    with pytest.raises(ConfigError, match="matches the name of no module of BertModel"):
        find_blocks(model, names, r"layers\.\d+")
    with pytest.raises(ValueError, match="blocks is not a regular expression"):
        SignRound(blocks="layers.(")


def test_calibration_without_batches_is_refused():
    grid = {"bits": 4, "group_size": 32, "selector": ENCODER}
    with pytest.raises(DataError, match="signround: the calibration data holds no batch"):
        shrink.quantize(_bert(), [SignRound(steps=1, **grid)], calibration=[], progress=False)


def test_one_rounding_stage_per_layer():
    model, calibration = _bert(), _batches(2, 0)
    grid = {"bits": 4, "group_size": 32, "selector": ENCODER}
    with pytest.raises(ConfigError, match="already rounded onto a grid; list one rounding stage"):
        shrink.quantize(model, [GPTQ(**grid), SignRound(steps=1, **grid)], calibration=calibration, progress=False)
    with pytest.raises(ConfigError, match="already rounded"):
        shrink.quantize(model, [SignRound(steps=1, **grid), GPTQ(**grid)], calibration=calibration, progress=False)
