"""Mixup (Zhang et al., "mixup: Beyond Empirical Risk Minimization", 2018): each training sample is blended with
another sample of its batch, ``x' = w x_i + (1 - w) x_j`` with ``w ~ U(0, 1)`` drawn per sample (Beta(1, 1)), and
its label becomes the same blend of the two labels. Under distillation the teacher labels the blended input itself
("function matching", Beyer et al., "Knowledge distillation: A good teacher is patient and consistent", 2022), so
the student learns the teacher's function between the training points as well as on them.

The blended labels travel as a :class:`MixedTarget`; :func:`cross_entropy` takes plain labels or a mixed target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from shrink.errors import DataError

__all__ = ["MixedTarget", "mix_batch", "cross_entropy"]


@dataclass(frozen=True)
class MixedTarget:
    """The labels of a mixed batch: sample ``i`` is ``weight[i]`` parts ``first[i]`` and the rest ``second[i]``."""

    first: torch.Tensor
    second: torch.Tensor
    weight: torch.Tensor


def mix_batch(inputs: Any, target: Any) -> tuple[torch.Tensor, MixedTarget | None]:
    """Blend each sample of ``inputs`` with a random other sample of the batch (torch's global generator, so a
    seeded or resumed run draws the same blends); the labels as a :class:`MixedTarget` (None without labels)."""
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        kind = type(inputs).__name__ if not isinstance(inputs, torch.Tensor) else f"{inputs.dtype} tensor"
        raise DataError(
            f"mixup: needs batches of floating-point input tensors (signals, images), got {kind}; token ids "
            "and dict inputs cannot be blended: turn mixup off for this model"
        )
    n = inputs.shape[0]
    weight = torch.rand(n, dtype=inputs.dtype, device=inputs.device)
    partner = torch.randperm(n, device=inputs.device)
    w = weight.reshape(n, *([1] * (inputs.dim() - 1)))
    mixed = w * inputs + (1 - w) * inputs[partner]
    if target is None:
        return mixed, None
    if not isinstance(target, torch.Tensor) or target.shape[:1] != (n,):
        raise DataError(
            f"mixup: needs one class label per sample (or target value), got a target of type {type(target).__name__}"
        )
    return mixed, MixedTarget(target, target[partner], weight)


def _check_classes(logits: torch.Tensor, labels: Any) -> None:
    """Cross-entropy on a regressor's output is 0 whatever the weights (one "class"), and float labels are values,
    not classes: both are refused, pointing at the regression losses."""
    if logits.dim() < 2 or logits.shape[1] < 2:  # cross-entropy's class axis is 1: (N, C) or (N, C, d1, ...)
        raise DataError(
            f"cross-entropy needs one score per class (at least 2), but the model's output has shape "
            f"{tuple(logits.shape)}: for a regressor, set loss='mse' (or 'l1') in the training config; a binary "
            "classifier needs two logits"
        )
    if isinstance(labels, torch.Tensor) and labels.is_floating_point() and labels.shape != logits.shape:
        raise DataError(
            f"cross-entropy needs integer class labels (or class probabilities shaped like the scores, "
            f"{tuple(logits.shape)}); got float targets of shape {tuple(labels.shape)}: for values to regress, "
            "set loss='mse' (or 'l1') in the training config"
        )


def cross_entropy(logits: torch.Tensor, target: torch.Tensor | MixedTarget) -> torch.Tensor:
    """Mean cross-entropy against class labels, or against the blend of two labels of a :class:`MixedTarget`."""
    _check_classes(logits, target.first if isinstance(target, MixedTarget) else target)
    if not isinstance(target, MixedTarget):
        return F.cross_entropy(logits, target)
    w = target.weight.to(logits.dtype)
    first = F.cross_entropy(logits, target.first, reduction="none")
    second = F.cross_entropy(logits, target.second, reduction="none")
    return (w * first + (1 - w) * second).mean()
