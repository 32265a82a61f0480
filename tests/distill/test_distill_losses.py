"""Distillation losses: values at known points, T² gradient scaling, hint/attention/embedding shapes."""

import pytest
import torch
import torch.nn.functional as F

from shrink.distillation.losses import (
    attention_kl_loss,
    attention_map_loss,
    embedding_loss,
    hint_loss,
    hinton_loss,
    kd_loss,
)
from shrink.errors import DataError


def test_kd_loss_is_zero_when_student_equals_teacher():
    logits = torch.randn(16, 10)
    for t in (1.0, 4.0, 10.0):
        assert kd_loss(logits.clone(), logits, t).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(torch.randn(16, 10), logits, 4.0).item() > 1e-3


def test_kd_loss_matches_kl_of_softened_distributions_times_t_squared():
    s, t, temp = torch.randn(8, 5), torch.randn(8, 5), 3.0
    p, q = F.softmax(t / temp, -1), F.softmax(s / temp, -1)
    expected = (p * (p.log() - q.log())).sum(-1).mean() * temp**2
    assert kd_loss(s, t, temp).item() == pytest.approx(expected.item(), rel=1e-5)


def _grad_norm(temp: float, scaled: bool) -> float:
    torch.manual_seed(0)
    teacher = torch.randn(64, 10)
    student = torch.randn(64, 10, requires_grad=True)
    loss = kd_loss(student, teacher, temp)
    (loss if scaled else loss / temp**2).backward()
    return float(student.grad.norm())


def test_t_squared_scaling_keeps_gradient_magnitude_across_temperatures():
    temps = (2.0, 4.0, 8.0, 16.0)
    scaled = [_grad_norm(t, True) for t in temps]
    unscaled = [_grad_norm(t, False) for t in temps]
    assert max(scaled) / min(scaled) < 2.5  # comparable at every temperature
    assert max(unscaled) / min(unscaled) > 50  # without T² the soft term's gradient fades as 1/T²


def test_hinton_loss_mixes_soft_and_hard_terms():
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    assert hinton_loss(s, t, y, 4.0, 0.0).item() == pytest.approx(F.cross_entropy(s, y).item(), rel=1e-6)
    assert hinton_loss(s, t, y, 4.0, 1.0).item() == pytest.approx(kd_loss(s, t, 4.0).item(), rel=1e-6)
    mixed = 0.3 * kd_loss(s, t, 4.0) + 0.7 * F.cross_entropy(s, y)
    assert hinton_loss(s, t, y, 4.0, 0.3).item() == pytest.approx(mixed.item(), rel=1e-6)
    assert hinton_loss(s, t, None, 4.0, 0.3).item() == pytest.approx(kd_loss(s, t, 4.0).item(), rel=1e-6)
    with pytest.raises(ValueError, match="alpha"):
        hinton_loss(s, t, y, 4.0, 1.5)
    with pytest.raises(DataError, match="shape"):
        kd_loss(torch.randn(8, 9), t)


def test_hint_and_attention_losses():
    a = torch.randn(2, 16, 8, 8)
    assert hint_loss(a, a).item() == 0.0
    with pytest.raises(DataError):
        hint_loss(a, torch.randn(2, 32, 8, 8))
    # attention maps compare across different channel counts, invariant to the map's scale
    assert attention_map_loss(a, torch.cat([a, a], 1) * 3).item() == pytest.approx(0.0, abs=1e-6)
    assert attention_map_loss(a, torch.randn(2, 32, 8, 8)).item() > 1e-3
    probs = torch.softmax(torch.randn(2, 4, 5, 5), -1)
    assert attention_kl_loss(probs, probs).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.softmax(torch.randn(2, 4, 5, 5), -1)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    full, masked = attention_kl_loss(other, probs), attention_kl_loss(other, probs, mask)
    assert full.item() > 0 and masked.item() > 0 and masked.item() != pytest.approx(full.item())


def test_embedding_loss():
    e = torch.randn(4, 8)
    assert embedding_loss(e, 2 * e, "cosine").item() == pytest.approx(0.0, abs=1e-6)
    assert embedding_loss(e, -e, "cosine").item() == pytest.approx(2.0, abs=1e-6)
    assert embedding_loss(e, e + 1, "mse").item() == pytest.approx(1.0, abs=1e-6)
