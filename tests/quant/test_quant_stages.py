"""Quantization composed from one config per algorithm: smooth_quant, gptq, then int8_static / int8_dynamic."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shrink
from shrink.errors import ConfigError
from shrink.pruning import MagnitudePruning
from shrink.quant import GPTQ, Int8Dynamic, Int8Static, PreparedLinear, SmoothQuant
from shrink.quant.static import MOVED_FIELDS
from shrink.stages import config_from_dict


def _model_and_data() -> tuple[nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 4)).eval()
    calib = [torch.randn(8, 5, 16) * torch.linspace(0.1, 4.0, 16) for _ in range(3)]
    return model, calib


@pytest.mark.parametrize("field", sorted(MOVED_FIELDS))
def test_fields_that_moved_to_their_own_stage_say_where(field):
    value = {"smooth": 0.5, "weight_rounding": "gptq", "gptq_sequential": True, "dynamic": {"types": ["Linear"]}}
    value |= {"dynamic_granularity": "token", "embedding_group_size": 32}
    with pytest.raises(ConfigError, match=f"'{field}' is no longer a field of int8_static: {MOVED_FIELDS[field][:20]}"):
        config_from_dict({"type": "int8_static", field: value[field]})


def test_smooth_quant_keeps_the_float_outputs_and_records_the_division():
    model, calib = _model_and_data()
    smoothed = shrink.quantize(model, SmoothQuant(alpha=0.5), calibration=calib)
    assert all(isinstance(smoothed[i], PreparedLinear) for i in (0, 2))
    assert smoothed[0].input_smooth is not None and not torch.allclose(smoothed[0].weight, model[0].weight)
    x = torch.randn(4, 5, 16) * torch.linspace(0.1, 4.0, 16)
    with torch.no_grad():
        assert torch.allclose(smoothed(x), model(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="smooth_quant: layer '0' is already smoothed; list smooth_quant once"):
        shrink.quantize(smoothed, SmoothQuant(), calibration=calib)


def test_a_chain_equals_its_stages_applied_one_by_one_and_saves_and_loads(tmp_path):
    model, calib = _model_and_data()
    steps = [SmoothQuant(alpha="auto", per_token=True), GPTQ(), Int8Dynamic(granularity="token")]
    chained = shrink.quantize(model, steps, calibration=calib)
    one_by_one = model
    for step in steps:
        one_by_one = shrink.quantize(one_by_one, step, calibration=calib)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        assert torch.equal(chained(x), one_by_one(x))
    prepared = shrink.quantize(model, steps[:2], calibration=calib)  # float, smoothed and on the grid: a shrink file
    loaded = shrink.load(shrink.save(prepared, tmp_path / "prepared.shrink"), lambda: _model_and_data()[0])
    assert isinstance(loaded[0], PreparedLinear) and loaded[0].grid_bits == 8
    with torch.no_grad():
        assert torch.equal(loaded(x), prepared(x))
    assert isinstance(model[0], nn.Linear) and not isinstance(model[0], PreparedLinear)  # the input is untouched


def test_a_chain_checks_every_config_before_it_runs():
    model, calib = _model_and_data()
    with pytest.raises(ConfigError, match=r"MagnitudePruning is a 'prune' config; use shrink.prune\(\)"):
        shrink.quantize(model, [GPTQ(), MagnitudePruning(sparsity=0.5)], calibration=calib)
    with pytest.raises(ConfigError, match="the list of configs is empty"):
        shrink.quantize(model, [], calibration=calib)


def test_recipe_stage_types_exist_for_each_algorithm():
    for data in ({"type": "smooth_quant", "alpha": "auto"}, {"type": "gptq", "sequential": True}):
        assert config_from_dict(data).type_name == data["type"]
    static = Int8Static()
    assert not {"smooth", "weight_rounding", "dynamic", "embedding_group_size"} & set(type(static).model_fields)
