"""Distillation losses as plain functions on tensors, usable from any training loop (QAT, pruning recovery, ...).

* :func:`kd_loss` — Hinton et al. (2015): KL divergence between temperature-softened teacher and student
  distributions, multiplied by T² so that its gradient keeps the same magnitude whatever the temperature.
* :func:`hinton_loss` — ``alpha * T² KL + (1 - alpha) * cross-entropy`` on hard labels.
* :func:`hint_loss` — FitNets (Romero et al., 2015): MSE between a projected student feature and the teacher's.
* :func:`attention_map_loss` — attention transfer for CNNs (Zagoruyko & Komodakis, 2017): distance between
  normalised spatial attention maps.
* :func:`attention_kl_loss` — attention transfer for transformers (MiniLM, Wang et al., 2020): KL between
  teacher and student self-attention distributions.
* :func:`embedding_loss` — cosine or MSE between sentence embeddings, for models without labels.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from shrink.errors import DataError
from shrink.train.mixup import MixedTarget, cross_entropy

__all__ = ["kd_loss", "hinton_loss", "hint_loss", "attention_map_loss", "attention_kl_loss", "embedding_loss"]


def _same_shape(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise DataError(f"{what}: student shape {tuple(a.shape)} != teacher shape {tuple(b.shape)}")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))`` averaged over the batch (0 when the logits are equal).

    The T² factor compensates the 1/T² by which softening scales the soft-target gradients, so a change of
    temperature does not change the loss's weight against the hard-label term.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    _same_shape(student_logits, teacher_logits, "kd_loss")
    if student_logits.dim() < 2 or student_logits.shape[-1] < 2:
        raise DataError(
            f"knowledge distillation matches class probabilities, but the outputs have shape "
            f"{tuple(student_logits.shape)} (one value per sample: a regressor?); to match a regressor's outputs "
            "use EmbeddingDistillation(loss='mse')"
        )
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    kl = F.kl_div(
        log_p_student.reshape(-1, log_p_student.shape[-1]),
        log_p_teacher.reshape(-1, log_p_teacher.shape[-1]),
        reduction="batchmean",
        log_target=True,
    )
    return kl * (t * t)


def hinton_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor | MixedTarget | None,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> torch.Tensor:
    """``alpha · kd_loss + (1 - alpha) · CE(student, target)``; without labels only the soft term is used. The
    labels may be a mixup batch's blended labels (:class:`shrink.train.mixup.MixedTarget`)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    soft = kd_loss(student_logits, teacher_logits, temperature)
    if target is None or alpha == 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * cross_entropy(student_logits, target)


def hint_loss(projected_student: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """FitNets hint loss: mean squared error between the (projected) student feature and the teacher feature."""
    _same_shape(projected_student, teacher_feature, "hint_loss")
    return F.mse_loss(projected_student.float(), teacher_feature.detach().float())


def _spatial_attention(feature: torch.Tensor, p: float) -> torch.Tensor:
    if feature.dim() != 4:
        raise DataError(f"attention_map_loss expects (N, C, H, W) feature maps, got shape {tuple(feature.shape)}")
    return F.normalize(feature.float().abs().pow(p).mean(1).flatten(1), dim=1)


def attention_map_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Attention transfer for CNNs: squared distance between L2-normalised maps ``mean_c |A_c|^p``.

    Channel counts may differ (the map averages over channels); spatial sizes must match.
    """
    s, t = _spatial_attention(student_feature, p), _spatial_attention(teacher_feature.detach(), p)
    _same_shape(s, t, "attention_map_loss (spatial size)")
    return (s - t).pow(2).sum(1).mean()


def attention_kl_loss(
    student_attention: torch.Tensor,
    teacher_attention: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Attention transfer for transformers: ``KL(teacher ‖ student)`` between attention probabilities of shape
    (batch, heads, queries, keys), averaged over heads and (unpadded) queries."""
    _same_shape(student_attention, teacher_attention, "attention_kl_loss")
    t = teacher_attention.detach().float().clamp_min(eps)
    s = student_attention.float().clamp_min(eps)
    kl = (t * (t.log() - s.log())).sum(-1)  # (batch, heads, queries)
    if attention_mask is None:
        return kl.mean()
    weights = attention_mask.to(kl.dtype)[:, None, :].expand_as(kl)
    return (kl * weights).sum() / weights.sum().clamp_min(1.0)


def embedding_loss(
    student: torch.Tensor, teacher: torch.Tensor, kind: Literal["cosine", "mse"] = "cosine"
) -> torch.Tensor:
    """``1 - cos`` (mean over the batch) or MSE between student and teacher embeddings."""
    _same_shape(student, teacher, "embedding_loss")
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student.float(), teacher.detach().float(), dim=-1)).mean()
    if kind == "mse":
        return F.mse_loss(student.float(), teacher.detach().float())
    raise ValueError(f"embedding loss kind must be 'cosine' or 'mse', got {kind!r}")
