"""Sparsity schedules: Zhu & Gupta's polynomial values, iterative per-cycle targets, gradual pruning stepping."""

import pytest
import torch
from torch import nn

import shrink
from shrink.errors import ConfigError
from shrink.pruning import GradualPruning, iterative_sparsities, polynomial_sparsity, polynomial_steps
from shrink.pruning import unstructured as unstructured_mod


def test_polynomial_endpoints_and_formula():
    kw = dict(initial=0.1, final=0.9, start=2, steps=4, frequency=3)
    assert polynomial_sparsity(0, **kw) == 0.1
    assert polynomial_sparsity(2, **kw) == 0.1
    assert polynomial_sparsity(14, **kw) == pytest.approx(0.9)
    assert polynomial_sparsity(100, **kw) == 0.9
    # s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3 at t = 5: (1 - 3/12)^3 = 0.421875
    assert polynomial_sparsity(5, **kw) == pytest.approx(0.9 - 0.8 * 0.421875)
    values = [polynomial_sparsity(t, **kw) for t in range(20)]
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    increments = [b - a for a, b in zip(values[2:14], values[3:15], strict=True)]
    assert increments[0] > increments[-1]  # fast early, slow late


def test_polynomial_steps_and_errors():
    assert polynomial_steps(start=1, steps=3, frequency=2) == [1, 3, 5, 7]
    with pytest.raises(ValueError, match="steps"):
        polynomial_sparsity(0, initial=0.0, final=0.5, start=0, steps=0)
    with pytest.raises(ValueError, match="initial"):
        polynomial_sparsity(0, initial=0.6, final=0.5, start=0, steps=2)


def test_iterative_sparsities_geometric_and_linear():
    geo = iterative_sparsities(0.9, 3)
    assert geo[-1] == 0.9
    remaining = [1.0] + [1 - s for s in geo]
    ratios = [b / a for a, b in zip(remaining, remaining[1:], strict=False)]
    assert ratios == pytest.approx([0.1 ** (1 / 3)] * 3)
    assert iterative_sparsities(0.6, 3, "linear") == pytest.approx([0.2, 0.4, 0.6])
    # cubic: 0.9 (1 - (1 - k/3)^3) = 0.9 * (19/27, 26/27, 1)
    assert iterative_sparsities(0.9, 3, "cubic") == pytest.approx([0.9 * 19 / 27, 0.9 * 26 / 27, 0.9])
    with pytest.raises(ValueError, match="'cubic'"):
        iterative_sparsities(0.5, 3, "quadratic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cycles"):
        iterative_sparsities(0.5, 0)


def test_gradual_config_rejects_schedule_longer_than_training():
    with pytest.raises(ConfigError, match="schedule ends at epoch 6"):
        GradualPruning(final_sparsity=0.8, epochs=5, pruning_steps=3, frequency=2)
    with pytest.raises(ConfigError, match="initial_sparsity"):
        GradualPruning(final_sparsity=0.2, initial_sparsity=0.5)


def _tiny():
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def _batches(n=3):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 16, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(n)]


def test_gradual_pruning_follows_the_schedule_between_epochs(monkeypatch):
    calls = []
    real = unstructured_mod.prune_unstructured

    def spy(modules, sparsity, *args):
        calls.append(round(sparsity, 6))
        return real(modules, sparsity, *args)

    monkeypatch.setattr(unstructured_mod, "prune_unstructured", spy)
    cfg = GradualPruning(final_sparsity=0.8, epochs=5, start_epoch=1, pruning_steps=2, frequency=2)
    ctx = {"train": _batches(), "progress": False}
    pruned = shrink.prune(_tiny(), cfg, **ctx)
    expected = [polynomial_sparsity(t, initial=0.0, final=0.8, start=1, steps=2, frequency=2) for t in (1, 3, 5)]
    assert calls == pytest.approx(expected)
    assert expected[1] == pytest.approx(0.8 - 0.8 * 0.125)
    weights = [pruned[0].weight, pruned[2].weight]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(0.8 * sum(w.numel() for w in weights))


def test_gradual_pruning_resumes_with_its_masks(tmp_path):
    cfg = GradualPruning(final_sparsity=0.7, epochs=3, pruning_steps=2)
    torch.manual_seed(0)
    start = _tiny()
    first = shrink.api.apply(start, cfg, shrink.api.Context(train=_batches(), progress=False, checkpoint_dir=tmp_path))
    again = shrink.api.apply(start, cfg, shrink.api.Context(train=_batches(), progress=False, checkpoint_dir=tmp_path))
    assert (tmp_path / "gradual" / "last.pt").exists()
    assert torch.equal(first[0].weight, again[0].weight) and torch.equal(first[2].weight, again[2].weight)
