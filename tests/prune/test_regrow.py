"""Drop-and-regrow (RigL) mask updates: the count of kept weights is fixed, the smallest kept weights go, the pruned
weights of largest gradient come back at zero, and gradual pruning runs them after its last mask update."""

import pytest
import torch
from torch import nn

from shrink.api import Context, apply
from shrink.errors import ConfigError
from shrink.pruning import GradualPruning, apply_mask, get_mask, sparsity
from shrink.pruning import unstructured as unstructured_mod
from shrink.pruning.regrow import dense_gradients, regrow_fraction, regrow_masks
from shrink.train.loop import cross_entropy_loss


def _layer(weight: list[float], keep: list[bool]) -> nn.Linear:
    layer = nn.Linear(len(weight), 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weight]))
    apply_mask(layer, torch.tensor([keep]))
    return layer


def test_the_smallest_kept_weights_make_way_for_the_largest_pruned_gradients():
    layer = _layer([0.5, -0.1, 0.9, 0.3, 0.7, 0.2], [True, True, True, False, False, False])
    grads = {"fc": torch.tensor([[0.0, 0.0, 0.0, 0.05, -2.0, 1.0]])}
    assert regrow_masks({"fc": layer}, grads, fraction=2 / 3) == 2
    assert get_mask(layer).tolist() == [[False, False, True, False, True, True]]
    # revived weights start at zero (their originals had been zeroed by the earlier mask), dropped ones are zeroed
    assert layer.weight.tolist() == [[0.0, 0.0, pytest.approx(0.9), 0.0, 0.0, 0.0]]


@pytest.mark.parametrize("make", [lambda p: torch.optim.Adam(p, lr=0.1), lambda p: torch.optim.SGD(p, 0.1, 0.9)])
def test_revived_weights_start_with_fresh_optimizer_state_and_kept_ones_keep_theirs(make):
    layer = _layer([0.5, -0.1, 0.9, 0.3], [True, True, True, False])
    original = layer.parametrizations.weight.original
    optimizer = make([original])
    layer(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    per_entry = [v for v in optimizer.state[original].values() if v.shape == original.shape]
    assert per_entry  # Adam's two moments, SGD's momentum buffer
    for value in per_entry:
        value.fill_(1.0)  # e.g. state the entry built up before it was pruned
    grads = {"fc": torch.tensor([[0.0, 0.0, 0.0, 1.0]])}
    regrow_masks({"fc": layer}, grads, fraction=1 / 3, optimizer=optimizer)  # -0.1 goes, the 4th entry comes back
    assert all(value.tolist() == [[1.0, 1.0, 1.0, 0.0]] for value in per_entry)


def test_global_scope_moves_weights_between_layers_and_layer_scope_does_not():
    def pair():
        return {
            "a": _layer([0.1, 0.2, 0.0, 0.0], [True, True, False, False]),
            "b": _layer([0.8, 0.9, 0.0, 0.0], [True, True, False, False]),
        }

    grads = {"a": torch.tensor([[0.0, 0.0, 0.0, 0.0]]), "b": torch.tensor([[0.0, 0.0, 3.0, 4.0]])}
    both = pair()
    regrow_masks(both, grads, fraction=0.5, scope="global")
    assert get_mask(both["a"]).sum() == 0 and get_mask(both["b"]).sum() == 4
    each = pair()
    regrow_masks(each, grads, fraction=0.5, scope="layer")
    assert get_mask(each["a"]).sum() == 2 and get_mask(each["b"]).sum() == 2
    assert get_mask(each["b"]).tolist() == [[False, True, False, True]]


def test_regrowth_needs_masks_and_a_valid_fraction():
    with pytest.raises(ValueError, match="no pruning mask"):
        regrow_masks({"fc": nn.Linear(3, 1)}, {"fc": torch.zeros(1, 3)}, 0.1)
    layer = _layer([1.0, 2.0], [True, False])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        regrow_masks({"fc": layer}, {"fc": torch.zeros(1, 2)}, 1.5)
    with pytest.raises(ValueError, match="scope"):
        regrow_masks({"fc": layer}, {"fc": torch.zeros(1, 2)}, 0.5, scope="block")


def test_the_fraction_decays_on_a_cosine_and_stops():
    assert regrow_fraction(10, start=10, end=20, fraction=0.3) == pytest.approx(0.3)
    assert regrow_fraction(15, start=10, end=20, fraction=0.3) == pytest.approx(0.15)
    assert regrow_fraction(20, start=10, end=20, fraction=0.3) == 0.0
    assert regrow_fraction(9, start=10, end=20, fraction=0.3) == 0.0


def test_dense_gradients_reach_pruned_entries():
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    apply_mask(layer, torch.tensor([[True, False, True, False]] * 3))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    grads = dense_gradients(layer, {"fc": layer}, cross_entropy_loss, (x, y))["fc"]
    plain = nn.Linear(4, 3)
    with torch.no_grad():
        plain.weight.copy_(layer.weight)
        plain.bias.copy_(layer.bias)
    cross_entropy_loss(plain, x, y).backward()
    torch.testing.assert_close(grads, plain.weight.grad)
    assert grads[:, 1].abs().sum() > 0  # pruned columns get a gradient too
    assert layer.parametrizations.weight.original.grad is None  # the model's own gradients are untouched


def test_gradual_pruning_regrows_after_its_last_update_and_keeps_the_sparsity(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    batches = [(torch.randn(16, 16), torch.randint(0, 4, (16,))) for _ in range(4)]
    seen: list[tuple[float, dict[str, torch.Tensor]]] = []

    def spy(modules, grads, fraction, scope, optimizer):
        assert isinstance(optimizer, torch.optim.Adam)  # fit's optimizer, whose state for revived weights is reset
        seen.append((fraction, {n: get_mask(m).clone() for n, m in modules.items()}))
        return regrow_masks(modules, grads, fraction, scope, optimizer)

    monkeypatch.setattr(unstructured_mod, "regrow_masks", spy)
    cfg = GradualPruning(final_sparsity=0.8, epochs=12, pruning_steps=3, frequency=1, lr=1e-2, regrow_fraction=0.3)
    ctx = Context(train=batches, progress=False)
    pruned = apply(model, cfg, ctx)
    # the last mask update is at epoch 3; regrowth at epochs 4..8 (it stops at 0.75 * 12 = 9), its fraction falling
    fractions = [f for f, _ in seen]
    assert len(fractions) == 5 and fractions == sorted(fractions, reverse=True) and fractions[0] == pytest.approx(0.3)
    assert sparsity(pruned) == pytest.approx(0.8, abs=1e-3)
    final = {"0": get_mask(pruned[0]), "2": get_mask(pruned[2])}
    assert any(not torch.equal(seen[0][1][n], final[n]) for n in final)  # the masks moved
    assert any("5 regrowth updates up to epoch 9" in n for n in ctx.notes)


def test_regrowth_from_the_first_update_runs_while_the_sparsity_rises(monkeypatch):
    torch.manual_seed(0)
    fractions: list[float] = []
    monkeypatch.setattr(
        unstructured_mod, "regrow_masks", lambda modules, grads, fraction, scope, opt: fractions.append(fraction) or 0
    )
    cfg = GradualPruning(final_sparsity=0.8, epochs=12, pruning_steps=3, frequency=2, regrow_fraction=0.2,
                         regrow_from="first_update", regrow_until=0.75)  # fmt: skip
    assert cfg.regrow_start == 1
    batches = [(torch.randn(8, 16), torch.randint(0, 4, (8,)))]
    pruned = apply(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)), cfg, Context(train=batches))
    # epochs 1..8: during the mask updates at 2, 4, 6 and after them, up to 0.75 * 12 = 9
    assert len(fractions) == 8 and fractions[0] == pytest.approx(0.2)
    assert sparsity(pruned) == pytest.approx(0.8, abs=1e-3)


def test_regrowth_must_end_after_the_last_mask_update():
    with pytest.raises(ConfigError, match="regrowth would stop at epoch 7"):
        GradualPruning(final_sparsity=0.8, epochs=10, pruning_steps=8, frequency=1, regrow_fraction=0.1,
                       regrow_until=0.75)  # fmt: skip
    GradualPruning(final_sparsity=0.8, epochs=10, pruning_steps=8, frequency=1, regrow_until=0.75)  # no regrowth
