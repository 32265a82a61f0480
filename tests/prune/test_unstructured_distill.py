"""Unstructured pruning trained against the unpruned model's soft targets (``distill_alpha``): the teacher is a frozen
dense copy (or the recipe's original model), the labels stop mattering at alpha 1, and the user's model is untouched."""

import pytest
import torch
from torch import nn

import shrink
from shrink.api import Context, apply
from shrink.distillation.objective import DistillLoss
from shrink.errors import ConfigError
from shrink.pruning import GradualPruning, IterativePruning
from shrink.pruning import unstructured as unstructured_mod
from shrink.pruning.masks import get_mask


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def _batches(label_seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g, labels = torch.Generator().manual_seed(1), torch.Generator().manual_seed(label_seed)
    return [(torch.randn(8, 16, generator=g), torch.randint(0, 4, (8,), generator=labels)) for _ in range(3)]


def _spy_fit(monkeypatch) -> list:
    seen = []
    real = unstructured_mod.fit

    def spy(model, train, **kw):
        seen.append(kw)
        return real(model, train, **kw)

    monkeypatch.setattr(unstructured_mod, "fit", spy)
    return seen


@pytest.mark.parametrize(
    "cfg",
    [
        GradualPruning(final_sparsity=0.8, epochs=3, pruning_steps=2, distill_alpha=0.7, temperature=2.0),
        IterativePruning(sparsity=0.8, cycles=2, epochs_per_cycle=1, distill_alpha=0.7, temperature=2.0),
    ],
)
def test_the_teacher_is_a_dense_frozen_copy_of_the_incoming_model(monkeypatch, cfg):
    calls = _spy_fit(monkeypatch)
    model = _tiny()
    before = [p.detach().clone() for p in model.parameters()]
    ctx = Context(train=_batches(), progress=False)
    pruned = apply(model, cfg, ctx)
    loss = calls[0]["loss_fn"]
    assert all(c["loss_fn"] is loss for c in calls)  # one teacher for the whole run
    assert isinstance(loss, DistillLoss) and (loss.alpha, loss.temperature) == (0.7, 2.0)
    assert loss.teacher is not model and loss.teacher is not pruned
    assert get_mask(loss.teacher[0]) is None and not loss.teacher.training
    assert all(torch.equal(a, b) for a, b in zip(before, loss.teacher.parameters(), strict=True))
    assert any("soft targets of a frozen copy of the incoming model" in n for n in ctx.notes)
    assert get_mask(pruned[0]) is not None and float((pruned[0].weight == 0).float().mean()) > 0.5


def test_a_given_teacher_is_used_and_labels_only_without_distillation(monkeypatch):
    calls = _spy_fit(monkeypatch)
    other = _tiny()
    ctx = Context(train=_batches(), progress=False, teacher=other)
    apply(_tiny(), GradualPruning(final_sparsity=0.5, epochs=2, pruning_steps=1, distill_alpha=1.0), ctx)
    assert calls[-1]["loss_fn"].teacher is other and any("the recipe's original model" in n for n in ctx.notes)
    apply(_tiny(), GradualPruning(final_sparsity=0.5, epochs=2, pruning_steps=1), Context(train=_batches()))
    assert not isinstance(calls[-1]["loss_fn"], DistillLoss)


def test_soft_targets_alone_do_not_read_the_labels():
    def run(label_seed: int, alpha: float) -> torch.Tensor:
        cfg = GradualPruning(final_sparsity=0.75, epochs=3, pruning_steps=2, lr=1e-2, distill_alpha=alpha)
        return shrink.prune(_tiny(), cfg, train=_batches(label_seed), progress=False)[2].weight.detach()

    assert torch.equal(run(1, 1.0), run(2, 1.0))  # alpha 1: only the teacher's outputs are targets
    assert not torch.equal(run(1, 0.5), run(2, 0.5))  # alpha 0.5: the labels count too


def test_distillation_settings_are_checked():
    with pytest.raises(ConfigError, match="distill_alpha"):
        GradualPruning(final_sparsity=0.5, distill_alpha=1.5)
    with pytest.raises(ConfigError, match="temperature"):
        IterativePruning(sparsity=0.5, temperature=0.0)


def test_iterative_cycles_train_their_epochs_and_the_last_its_final_epochs(monkeypatch):
    calls = _spy_fit(monkeypatch)
    ctx = Context(train=_batches(), progress=False)
    cfg = IterativePruning(sparsity=0.9, cycles=3, epochs_per_cycle=1, final_epochs=4, spacing="cubic")
    pruned = apply(_tiny(), cfg, ctx)
    assert [c["epochs"] for c in calls] == [1, 1, 4]
    assert any("3 cycles x 1 epochs, the last 4 (63.3%, 86.7%, 90.0%)" in n for n in ctx.notes)
    weights = [pruned[0].weight, pruned[2].weight]
    assert sum(int((w == 0).sum()) for w in weights) == round(0.9 * sum(w.numel() for w in weights))
    calls.clear()
    apply(_tiny(), IterativePruning(sparsity=0.5, cycles=2, epochs_per_cycle=2), Context(train=_batches()))
    assert [c["epochs"] for c in calls] == [2, 2]  # without final_epochs the last cycle is like the others
