"""The MNIST-1D selection script builds every row of every grid with the method that grid names (no training: the
verbs are replaced by recorders), and refuses a grid it has no builder for."""

from types import SimpleNamespace

import benchmarks.mnist1d_families as families
import benchmarks.mnist1d_select as select
import pytest
from torch import nn

#: the verb (or pruning helper) each grid's rows must reach
EXPECTED = {
    "hard": "finetune", "kd": "distill", "dense": "distill", "iterative": "prune", "iterative_distill": "prune",
    "gradual": "prune", "gradual_distill": "prune", "gradual_regrow": "prune", "regrow_fresh": "prune",
    "regrow_long": "prune", "regrow_noise": "prune", "gradual_kd": "prune", "channels": "prune_channels",
    "qat": "quantize", "binarize": "quantize", "deep": "deep_compress",
}  # fmt: skip


@pytest.fixture
def calls(monkeypatch):
    seen: list[tuple[str, str]] = []

    def recorder(verb):
        def record(model, *args, **kwargs):
            configs = [a for a in args if not isinstance(a, nn.Module)]
            seen.append((verb, type(configs[0]).__name__ if configs else ""))
            return model

        return record

    for verb in ("finetune", "distill", "prune", "quantize", "deep_compress"):
        monkeypatch.setattr(select.shrink, verb, recorder(verb))
    monkeypatch.setattr(families, "prune_channels", recorder("prune_channels"))
    return seen


def test_every_grid_row_reaches_its_method(calls):
    assert set(EXPECTED) == set(select.GRID)
    data = SimpleNamespace(train=[], calibration=[])
    for kind, rows in select.GRID.items():
        for params in rows:
            calls.clear()
            select._build(kind, dict(params), nn.Linear(1, 1), data)
            assert calls and calls[0][0] == EXPECTED[kind], (kind, params, calls)
            if kind in select.GRADUAL_GRIDS:
                assert calls[0][1] == "GradualPruning", (kind, calls)


def test_a_grid_without_builder_is_refused(calls):
    with pytest.raises(ValueError, match="no builder"):
        select._build("nonexistent", {}, nn.Linear(1, 1), SimpleNamespace(train=[], calibration=[]))


def test_the_noise_grid_first_row_is_the_benchmarked_90_percent_recipe(monkeypatch):
    """``regrow_noise``'s noise-free row is the control of that grid: it must be the recipe the bench runs."""
    configs = []
    monkeypatch.setattr(select.shrink, "prune", lambda model, config, **kwargs: configs.append(config) or model)
    data = SimpleNamespace(train=[], calibration=[])
    families._unstructured(nn.Linear(1, 1), data, seed=0)
    select._build("regrow_noise", dict(select.GRID["regrow_noise"][0]), nn.Linear(1, 1), data)
    bench, grid = configs
    assert grid == bench and grid.input_noise == 0.0
