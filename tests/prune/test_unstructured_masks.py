"""Unstructured masks: exact sparsity (layer / global, magnitude / random), binary masks, pruned weights stay zero
through fine-tuning, masks survive deepcopy and state_dict, iterative pruning and L1/L2 penalties."""

import copy

import pytest
import torch
from torch import nn

import shrink
from shrink.api import Context, apply
from shrink.errors import ConfigError, DataError
from shrink.pruning import (
    IterativePruning,
    MagnitudePruning,
    apply_mask,
    get_mask,
    make_permanent,
    unstructured_masks,
)
from shrink.pruning.masks import Mask
from shrink.pruning.penalty import weight_penalty
from shrink.train import fit


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(torch.relu(self.conv(x)).flatten(1))))


def _layers(model):
    return {"conv": model.conv, "fc1": model.fc1, "fc2": model.fc2}


def _batches(n=4):
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(16, 3, 4, 4, generator=g), torch.randint(0, 5, (16,), generator=g)) for _ in range(n)]


@pytest.mark.parametrize("criterion", ["magnitude", "random"])
def test_layer_scope_prunes_each_layer_exactly(criterion):
    model = shrink.prune(Net(), MagnitudePruning(sparsity=0.7, scope="layer", criterion=criterion))
    for m in _layers(model).values():
        assert int((m.weight == 0).sum()) == round(0.7 * m.weight.numel())
        mask = get_mask(m)
        assert mask.dtype == torch.bool and torch.equal(m.weight != 0, mask)


def test_global_scope_exact_total_and_keeps_largest():
    model = Net()
    magnitudes = torch.cat([m.weight.detach().abs().reshape(-1) for m in _layers(model).values()])
    pruned = shrink.prune(model, MagnitudePruning(sparsity=0.9, scope="global"))
    kept = torch.cat([p.weight.detach().abs().reshape(-1) for p in _layers(pruned).values()])
    assert int((kept == 0).sum()) == round(0.9 * kept.numel())
    threshold = torch.sort(magnitudes).values[round(0.9 * magnitudes.numel())]
    assert float(kept[kept != 0].min()) >= float(threshold)
    per_layer = [float((m.weight == 0).float().mean()) for m in _layers(pruned).values()]
    assert max(per_layer) - min(per_layer) > 0.01  # global ranking gives layers different sparsities
    assert all(p.weight.count_nonzero() == p.weight.numel() for p in _layers(model).values())  # user model intact


@pytest.mark.parametrize("criterion", ["magnitude", "random"])
def test_rising_sparsity_never_revives_a_weight(criterion):
    model = Net()
    layers = _layers(model)
    old = unstructured_masks(layers, 0.5, "global", criterion, seed=1)
    for name, mask in old.items():
        apply_mask(layers[name], mask)
    new = unstructured_masks(layers, 0.8, "global", criterion, seed=2)
    for name in layers:
        assert not bool((new[name] & ~old[name]).any())
    assert sum(int((~m).sum()) for m in new.values()) == round(0.8 * sum(m.numel() for m in new.values()))


def test_random_differs_from_magnitude():
    a = shrink.prune(Net(), MagnitudePruning(sparsity=0.5, scope="layer"))
    b = shrink.prune(Net(), MagnitudePruning(sparsity=0.5, scope="layer", criterion="random"))
    assert not torch.equal(get_mask(a.fc1), get_mask(b.fc1))


def test_pruned_weights_stay_zero_through_fine_tuning():
    model = shrink.prune(Net(), MagnitudePruning(sparsity=0.8))
    masks = {n: get_mask(m).clone() for n, m in _layers(model).items()}
    before = {n: m.weight.detach().clone() for n, m in _layers(model).items()}
    fit(model, _batches(), epochs=2, lr=1e-2, progress=False)
    for name, m in _layers(model).items():
        assert int(m.weight[~masks[name]].abs().sum()) == 0
        assert torch.equal(get_mask(m), masks[name])
        assert not torch.equal(m.weight[masks[name]], before[name][masks[name]])  # kept weights did train


def test_masks_survive_deepcopy_and_state_dict():
    model = shrink.prune(Net(), MagnitudePruning(sparsity=0.6))
    twin = copy.deepcopy(model)
    assert torch.equal(get_mask(twin.fc1), get_mask(model.fc1))
    get_mask(twin.fc1).fill_(True)
    assert float((model.fc1.weight == 0).float().mean()) > 0.3  # the copy's mask is its own
    make_permanent(twin)
    x = torch.randn(2, 3, 4, 4)
    model(x)  # baking a copy must not break the original's parametrization
    assert get_mask(model.fc1) is not None and get_mask(twin.fc1) is None

    state = model.state_dict()
    assert any(k.endswith("mask") for k in state)
    fresh = Net()
    for m in _layers(fresh).values():
        apply_mask(m, torch.ones_like(m.weight, dtype=torch.bool))
    fresh.load_state_dict(state)
    for name, m in _layers(fresh).items():
        assert torch.equal(get_mask(m), get_mask(_layers(model)[name]))
    assert torch.allclose(fresh(x), model(x))


def test_make_permanent_keeps_values_and_removes_masks():
    model = shrink.prune(Net(), MagnitudePruning(sparsity=0.75))
    x = torch.randn(2, 3, 4, 4)
    ref = model(x)
    make_permanent(model)
    assert type(model.fc1) is nn.Linear and not any(isinstance(m, Mask) for m in model.modules())
    assert torch.allclose(model(x), ref)
    assert int((model.fc1.weight == 0).sum()) > 0


def test_iterative_pruning_reaches_exact_sparsity_and_notes_it():
    ctx = Context(train=_batches(), progress=False)
    pruned = apply(Net(), IterativePruning(sparsity=0.85, cycles=3, epochs_per_cycle=1, scope="layer"), ctx)
    for m in _layers(pruned).values():
        assert int((m.weight == 0).sum()) == round(0.85 * m.weight.numel())
    assert "3 cycles" in ctx.notes[0] and "sparsity 85.0%" in ctx.notes[0]


def test_iterative_pruning_resumes_from_checkpoints(tmp_path):
    cfg = IterativePruning(sparsity=0.8, cycles=2, epochs_per_cycle=2)
    first = apply(Net(), cfg, Context(train=_batches(), progress=False, checkpoint_dir=tmp_path))
    assert (tmp_path / "cycle-02" / "last.pt").exists()
    again = apply(Net(), cfg, Context(train=_batches(), progress=False, checkpoint_dir=tmp_path))
    assert torch.equal(first.fc1.weight, again.fc1.weight)


def test_iterative_pruning_needs_data_and_valid_fields():
    with pytest.raises(DataError, match="iterative_pruning.*training data"):
        apply(Net(), IterativePruning(sparsity=0.5), Context(progress=False))
    with pytest.raises(ConfigError, match="sparsity"):
        IterativePruning(sparsity=1.0)
    with pytest.raises(ConfigError, match="unknown field 'cycle'"):
        IterativePruning(sparsity=0.5, cycle=2)


def test_weight_penalties():
    model = Net()
    layers = _layers(model)
    count = sum(m.weight.numel() for m in layers.values())
    weights = [m.weight.detach() for m in layers.values()]
    l1 = float(weight_penalty(layers, "l1", 0.5)(model).detach())
    l2 = float(weight_penalty(layers, "l2", 0.5)(model).detach())
    assert l1 == pytest.approx(0.5 * sum(float(w.abs().sum()) for w in weights) / count)
    assert l2 == pytest.approx(0.5 * sum(float(w.pow(2).sum()) for w in weights) / count)
    assert weight_penalty(layers, "none", 0.5) is None


def test_l1_regularized_fine_tuning_shrinks_surviving_weights():
    cfg = dict(sparsity=0.5, cycles=1, epochs_per_cycle=3, lr=1e-2)
    plain = apply(Net(), IterativePruning(**cfg), Context(train=_batches(), progress=False))
    l1 = apply(
        Net(), IterativePruning(**cfg, regularization="l1", reg_strength=5.0), Context(train=_batches(), progress=False)
    )
    assert float(l1.fc1.weight.detach().abs().sum()) < 0.9 * float(plain.fc1.weight.detach().abs().sum())


def test_a_lower_target_never_revives_pruned_weights():
    model = shrink.prune(Net(), MagnitudePruning(sparsity=0.8))
    before = {n: get_mask(m).clone() for n, m in _layers(model).items()}
    again = shrink.prune(model, MagnitudePruning(sparsity=0.5))
    for name, m in _layers(again).items():
        assert torch.equal(get_mask(m), before[name])
