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
    "regrow_long": "prune", "regrow_noise": "prune", "regrow_ensemble": "prune", "gradual_kd": "prune",
    "channels": "prune_channels",
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
    monkeypatch.setattr(families, "ensemble_teacher", _ensemble_recorder)
    return seen


def _ensemble_recorder(model, members=families.ENSEMBLE_MEMBERS):
    """Stands in for the zoo's trained ensemble members: the teacher ``shrink.prune`` gets names its size."""
    return ("ensemble", members)


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


def test_the_benchmarked_90_percent_recipe_is_the_chosen_ensemble_row(monkeypatch):
    """The bench's 90% row is ``regrow_ensemble``'s row of ``ENSEMBLE_MEMBERS`` members, whose single-teacher control
    is ``regrow_noise``'s noise-free row."""
    runs = []
    monkeypatch.setattr(select.shrink, "prune", lambda model, config, **kw: runs.append((config, kw.get("teacher"))))
    monkeypatch.setattr(families, "ensemble_teacher", _ensemble_recorder)
    data = SimpleNamespace(train=[], calibration=[])
    families._unstructured(nn.Linear(1, 1), data, seed=0)
    chosen = next(p for p in select.GRID["regrow_ensemble"] if p["ensemble"] == families.ENSEMBLE_MEMBERS)
    for kind, params in (("regrow_ensemble", chosen), ("regrow_ensemble", select.GRID["regrow_ensemble"][0]),
                         ("regrow_noise", select.GRID["regrow_noise"][0])):  # fmt: skip
        select._build(kind, dict(params), nn.Linear(1, 1), data)
    (bench, bench_teacher), (grid, grid_teacher), (single, no_teacher), (noise_free, _) = runs
    assert grid == bench == single == noise_free and bench.input_noise == 0.0
    assert bench_teacher == grid_teacher == ("ensemble", families.ENSEMBLE_MEMBERS) and no_teacher is None
