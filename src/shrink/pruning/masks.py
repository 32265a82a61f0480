"""Pruning masks as ``torch.nn.utils.parametrize`` reparametrizations: ``weight = original * mask``.

Masks survive ``deepcopy`` and ``state_dict`` and stay applied during fine-tuning until :func:`make_permanent`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from shrink._parametrize import bake_parametrizations
from shrink.errors import ModelError

__all__ = ["Mask", "apply_mask", "get_mask", "make_permanent", "sparsity", "weight_of"]


class Mask(nn.Module):
    """Multiplies a tensor by a fixed 0/1 mask (stored as a buffer, so it is saved with the model)."""

    mask: torch.Tensor

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().to(torch.bool).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask.to(x.dtype)


def weight_of(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """``module.<name>`` as a tensor (its effective, masked value when parametrized)."""
    value = getattr(module, name, None)
    if not isinstance(value, torch.Tensor):
        raise ModelError(f"{type(module).__name__} has no tensor {name!r} to prune")
    return value


def get_mask(module: nn.Module, name: str = "weight") -> torch.Tensor | None:
    """The current mask of ``module.<name>``, or None if it is not masked."""
    if not parametrize.is_parametrized(module, name):
        return None
    for p in getattr(module, "parametrizations")[name]:  # noqa: B009 (added at run time)
        if isinstance(p, Mask):
            return p.mask
    return None


def apply_mask(module: nn.Module, mask: torch.Tensor, name: str = "weight") -> None:
    """Set the mask of ``module.<name>`` (replacing an existing one); pruned values are also zeroed in the original,
    so that removing the parametrization keeps them zero."""
    weight = getattr(module, name)
    if mask.shape != weight.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != {name} shape {tuple(weight.shape)}")
    existing = get_mask(module, name)
    if existing is not None:
        existing.copy_(mask.to(torch.bool))
    else:
        parametrize.register_parametrization(module, name, Mask(mask))
    with torch.no_grad():
        original = getattr(module, "parametrizations")[name].original  # noqa: B009
        original.mul_(mask.to(original.dtype))


def make_permanent(model: nn.Module) -> nn.Module:
    """Bake every mask into the plain weights and remove the parametrizations (in place); returns ``model``."""
    return bake_parametrizations(model)


def sparsity(model: nn.Module, modules: dict[str, nn.Module] | None = None) -> float:
    """Fraction of zero weights over the given modules' ``weight`` (default: every Linear and Conv)."""
    chosen = (
        modules
        if modules is not None
        else {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))}
    )
    total = zeros = 0
    for m in chosen.values():
        w = weight_of(m)
        total += w.numel()
        zeros += int((w == 0).sum())
    return zeros / max(total, 1)
