"""L1 / L2 weight penalties added to the loss while a pruned model is fine-tuned (``fit(regularizer=...)``).

L1 pushes the surviving weights towards zero so the next pruning cycle removes them with less damage (Han et al.
2015 compare both); L2 keeps them small. The penalty is taken on the effective (masked) weights of the pruned
layers only, and is the mean over weights times ``strength``, so its scale does not grow with the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from shrink.pruning.masks import weight_of

__all__ = ["Regularization", "weight_penalty"]

Regularization = Literal["none", "l1", "l2"]


def weight_penalty(
    modules: dict[str, nn.Module], kind: Regularization, strength: float
) -> Callable[[nn.Module], torch.Tensor] | None:
    """``regularizer(model) -> scalar`` for :func:`shrink.train.fit`, or None for ``kind="none"``."""
    if kind == "none" or strength == 0.0:
        return None
    if kind not in ("l1", "l2"):
        raise ValueError(f"regularization must be 'none', 'l1' or 'l2', got {kind!r}")
    if strength < 0:
        raise ValueError(f"regularization strength must be >= 0, got {strength}")
    layers = list(modules.values())
    count = sum(weight_of(m).numel() for m in layers)

    def penalty(_model: nn.Module) -> torch.Tensor:
        weights = [weight_of(m) for m in layers]
        terms = [w.abs().sum() if kind == "l1" else w.pow(2).sum() for w in weights]
        return torch.stack(terms).sum() * (strength / count)

    return penalty
