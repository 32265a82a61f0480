"""GPT-2's transformers Conv1D layers as nn.Linear (linear_from_conv1d), and the quantization stages on the result,
SignRound included (GPT-2's blocks receive their key/value cache as a positional argument)."""

import pytest
import torch
import transformers as tr
from torch import nn

import shrink
from shrink import presets
from shrink.errors import ModelError, SelectorError
from shrink.quant import PackedLinear, SignRound, WeightOnly, linear_from_conv1d
from shrink.select import Selector


def _gpt2() -> nn.Module:
    torch.manual_seed(0)
    config = tr.GPT2Config(vocab_size=96, n_embd=128, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
    return tr.GPT2LMHeadModel(config).eval()


def _calibration() -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(0, 96, (4, 16), generator=gen)} for _ in range(4)]


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_conversion_keeps_the_function_and_leaves_the_model_alone():
    model, ids = _gpt2(), _calibration()[0]["input_ids"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    linear = linear_from_conv1d(model)
    assert type(model.transformer.h[0].attn.c_attn).__name__ == "Conv1D"  # the input is not touched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    layer = linear.transformer.h[0].attn.c_attn
    assert isinstance(layer, nn.Linear) and (layer.in_features, layer.out_features) == (128, 384)
    assert not any(type(m).__name__ == "Conv1D" for m in linear.modules())
    torch.testing.assert_close(_logits(linear, ids), _logits(model, ids), rtol=1e-5, atol=1e-5)
    same = linear_from_conv1d(model, inplace=True)
    assert same is model and isinstance(model.transformer.h[1].mlp.c_proj, nn.Linear)


def test_a_model_without_conv1d_is_an_error():
    with pytest.raises(ModelError, match="holds no transformers Conv1D layer"):
        linear_from_conv1d(nn.Sequential(nn.Linear(4, 4)))


def test_a_linear_selector_on_gpt2_points_to_the_conversion():
    with pytest.raises(SelectorError, match=r"Conv1D x8.*linear_from_conv1d"):
        shrink.quantize(_gpt2(), presets.get("decoder-w8a8"), calibration=_calibration())


def test_decoder_preset_on_converted_gpt2():
    model, data = _gpt2(), _calibration()
    q = shrink.quantize(linear_from_conv1d(model), presets.get("decoder-w8a8"), calibration=data, progress=False)
    cos = nn.functional.cosine_similarity(
        _logits(q, data[0]["input_ids"]).flatten(), _logits(model, data[0]["input_ids"]).flatten(), dim=0
    )
    assert type(q.transformer.h[0].mlp.c_fc).__name__ != "Linear"  # quantized in place
    assert 0.99 < float(cos) < 1.0


def test_signround_on_gpt2_blocks_with_a_positional_cache():
    model, data = _gpt2(), _calibration()
    grid = {"bits": 4, "group_size": 128, "selector": presets.DECODER_LINEARS}
    linear = linear_from_conv1d(model)
    q = shrink.quantize(linear, [SignRound(**grid, steps=10), WeightOnly(**grid)], calibration=data, progress=False)
    assert isinstance(q.transformer.h[1].attn.c_proj, PackedLinear)
    ids = data[0]["input_ids"]
    cos = nn.functional.cosine_similarity(_logits(q, ids).flatten(), _logits(model, ids).flatten(), dim=0)
    assert 0.98 < float(cos) < 1.0


def test_a_converted_model_saves_and_loads_from_the_original_class(tmp_path):
    model, data = _gpt2(), _calibration()
    grid = {"bits": 4, "group_size": 128, "selector": Selector(types=("Linear",), ignore=("lm_head", "re:.*c_proj"))}
    q = shrink.quantize(linear_from_conv1d(model), WeightOnly(**grid), calibration=data, progress=False)
    loaded = shrink.load(shrink.save(q, tmp_path / "gpt2.shrink"), _gpt2)  # the factory builds Conv1D layers
    assert isinstance(loaded.transformer.h[0].attn.c_attn, PackedLinear)
    assert type(loaded.transformer.h[0].attn.c_proj) is nn.Linear  # left float, still a Linear
    ids = data[0]["input_ids"]
    assert torch.equal(_logits(loaded, ids), _logits(q, ids))
