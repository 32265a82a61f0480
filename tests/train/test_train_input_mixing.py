"""What training does to its inputs: mixup (blended batches and labels, the loss on blended labels) and Gaussian input
noise (its scale, the inputs it refuses), and training with each (fine-tuning; distillation, where the teacher labels
the blended or noisy inputs; gradual pruning, whose regrowth gradient reads a noisy batch too)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import shrink
from shrink.distillation import KnowledgeDistillation
from shrink.distillation.losses import hinton_loss
from shrink.errors import ConfigError, DataError
from shrink.pruning import GradualPruning
from shrink.train import FineTune, fit
from shrink.train.mixup import MixedTarget, cross_entropy, mix_batch
from shrink.train.noise import add_noise


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, 40, generator=g), torch.randint(0, 10, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(40, 16), nn.ReLU(), nn.Linear(16, 10))


def test_each_sample_is_a_blend_of_two_batch_samples_with_its_labels():
    torch.manual_seed(1)
    x, y = torch.randn(8, 1, 40), torch.arange(8)
    mixed, target = mix_batch(x, y)
    assert isinstance(target, MixedTarget) and mixed.shape == x.shape
    assert ((target.weight >= 0) & (target.weight <= 1)).all() and torch.equal(target.first, y)
    partner = target.second  # labels are the sample indices here, so they name each sample's partner
    w = target.weight.reshape(8, 1, 1)
    assert torch.allclose(mixed, w * x + (1 - w) * x[partner])
    assert sorted(partner.tolist()) == list(range(8))  # a permutation of the batch


def test_blended_cross_entropy_weighs_the_two_labels():
    logits, a, b = torch.randn(4, 10), torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7, 8])
    w = torch.tensor([1.0, 0.0, 0.25, 0.5])
    per_sample = [
        wi * F.cross_entropy(logits[i : i + 1], a[i : i + 1])
        + (1 - wi) * F.cross_entropy(logits[i : i + 1], b[i : i + 1])
        for i, wi in enumerate(w)
    ]
    expected = torch.stack(per_sample).mean()
    assert torch.allclose(cross_entropy(logits, MixedTarget(a, b, w)), expected)
    assert torch.allclose(cross_entropy(logits, MixedTarget(a, b, torch.ones(4))), F.cross_entropy(logits, a))
    # Hinton's hard-label term reads blended labels the same way
    mixed = hinton_loss(logits, logits, MixedTarget(a, b, w), alpha=0.0)
    assert torch.allclose(mixed, expected)


def test_inputs_that_cannot_be_blended_are_refused():
    with pytest.raises(DataError, match="mixup: needs batches of floating-point input tensors.*dict"):
        mix_batch({"input_ids": torch.ones(2, 3, dtype=torch.long)}, None)
    with pytest.raises(DataError, match="torch.int64 tensor"):
        mix_batch(torch.ones(2, 3, dtype=torch.long), None)
    with pytest.raises(DataError, match="one class label per sample"):
        mix_batch(torch.randn(4, 3), torch.zeros(3, dtype=torch.long))


def test_fine_tuning_with_mixup_is_seeded_and_differs_from_plain():
    runs = []
    for mixup in (True, True, False):
        torch.manual_seed(0)
        runs.append(fit(_net(), _data(), epochs=2, lr=1e-2, mixup=mixup, progress=False))
    same = [torch.equal(p, q) for p, q in zip(runs[0].parameters(), runs[1].parameters(), strict=True)]
    assert all(same)  # the blends come from torch's seeded generator
    assert not torch.equal(runs[0][1].weight, runs[2][1].weight)
    model = shrink.finetune(_net(), FineTune(epochs=1, lr=1e-2, mixup=True), train=_data(), progress=False)
    assert not model.training


def test_distillation_with_mixup_shows_the_teacher_the_blended_inputs():
    teacher = _net(seed=1).eval()
    seen = []
    teacher.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    data = _data()
    originals = torch.cat([x for x, _ in data])
    cfg = KnowledgeDistillation(epochs=1, lr=1e-2, temperature=1.0, alpha=1.0, mixup=True)
    shrink.distill(_net(), teacher, cfg, train=data, progress=False)
    assert seen and all(x.shape[1:] == (1, 40) for x in seen)
    blended = torch.cat(seen)
    # no input the teacher labelled is a training signal as is (a blend weight of exactly 0 or 1 has probability 0)
    assert not any(torch.equal(b, o) for b in blended[:8] for o in originals)


def test_noise_is_the_given_fraction_of_the_batch_spread():
    torch.manual_seed(0)
    x = 3.0 * torch.randn(256, 1, 40) + 5.0
    noisy = add_noise(x, 0.2)
    assert noisy.shape == x.shape and not torch.equal(noisy, x)
    assert abs(float((noisy - x).std()) - 0.2 * float(x.std())) < 0.02 * float(x.std())
    assert abs(float((noisy - x).mean())) < 0.02  # zero-mean: the signal's level is kept
    assert add_noise(x, 0.0) is x  # off: the very same tensor, no draw


def test_inputs_that_cannot_take_noise_are_refused():
    with pytest.raises(DataError, match="input_noise: needs batches of floating-point input tensors.*dict"):
        add_noise({"input_ids": torch.ones(2, 3, dtype=torch.long)}, 0.1)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="torch.int64 tensor"):
        add_noise(torch.ones(2, 3, dtype=torch.long), 0.1)
    with pytest.raises(ConfigError, match="input_noise: must be >= 0, got -0.1"):
        add_noise(torch.randn(2, 3), -0.1)
    for config in (FineTune, KnowledgeDistillation):
        with pytest.raises(ConfigError, match=f"{config.__name__}: field 'input_noise'.*greater than or equal to 0"):
            config(input_noise=-0.5)
    with pytest.raises(ConfigError, match="GradualPruning: field 'input_noise'"):
        GradualPruning(final_sparsity=0.5, input_noise=-0.5)


def test_fine_tuning_with_noise_is_seeded_and_differs_from_plain():
    runs = []
    for noise in (0.1, 0.1, 0.0):
        torch.manual_seed(0)
        runs.append(fit(_net(), _data(), epochs=2, lr=1e-2, mixup=True, input_noise=noise, progress=False))
    assert all(torch.equal(p, q) for p, q in zip(runs[0].parameters(), runs[1].parameters(), strict=True))
    assert not torch.equal(runs[0][1].weight, runs[2][1].weight)
    model = shrink.finetune(_net(), FineTune(epochs=1, lr=1e-2, input_noise=0.1), train=_data(), progress=False)
    assert not model.training


def _teacher_inputs(run):
    """Every input a teacher saw while ``run(teacher)`` trained a student against it."""
    teacher, seen = _net(seed=1).eval(), []
    teacher.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    run(teacher)
    return torch.cat(seen)


def test_distillation_shows_the_teacher_the_noisy_inputs():
    data = _data()
    originals = torch.cat([x for x, _ in data])
    cfg = KnowledgeDistillation(epochs=1, lr=1e-2, temperature=1.0, alpha=1.0, input_noise=0.1)
    seen = _teacher_inputs(lambda teacher: shrink.distill(_net(), teacher, cfg, train=data, progress=False))
    assert seen.shape == originals.shape
    # each labelled input is a training signal plus noise of about 0.1 of the batch spread, never the signal itself
    nearest = torch.cdist(seen.flatten(1), originals.flatten(1)).min(dim=1).values
    assert (nearest > 0).all() and float(nearest.mean()) < 0.2 * (40**0.5)


def test_gradual_pruning_trains_and_regrows_on_noisy_inputs():
    data = _data()
    originals = torch.cat([x for x, _ in data])
    cfg = GradualPruning(
        final_sparsity=0.5,
        epochs=3,
        pruning_steps=1,
        lr=1e-2,
        distill_alpha=1.0,
        regrow_fraction=0.1,
        regrow_until=1.0,
        input_noise=0.1,
    )
    seen = _teacher_inputs(lambda teacher: shrink.prune(_net(), cfg, train=data, teacher=teacher, progress=False))
    assert len(seen) > len(originals)  # the training epochs and the regrowth batches
    nearest = torch.cdist(seen.flatten(1), originals.flatten(1)).min(dim=1).values
    assert (nearest > 0).all()
