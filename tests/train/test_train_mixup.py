"""Mixup: blended batches and labels, the loss on blended labels, and training with it (fine-tuning and
distillation, where the teacher labels the blended inputs)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import shrink
from shrink.distillation import KnowledgeDistillation
from shrink.distillation.losses import hinton_loss
from shrink.errors import DataError
from shrink.train import FineTune, fit
from shrink.train.mixup import MixedTarget, cross_entropy, mix_batch


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
