"""Drop-and-regrow mask updates at a fixed sparsity (RigL: Evci et al., "Rigging the Lottery: Making All Tickets
Winners", 2020; after gradual pruning as in GraNet: Liu et al., "Sparse Training via Boosting Pruning Plasticity
with Neuroregeneration", 2021).

Each update removes the ``fraction`` of surviving weights with the smallest magnitude and revives as many pruned
weights, those whose loss gradient is largest in magnitude; revived weights start at zero, so the update leaves the
model's function unchanged until training moves them, and the optimizer's state for them (Adam's moments, SGD's
momentum) is reset, as in RigL's reference code, so that they start as fresh weights. The number of weights kept
never changes. The gradient is the dense one (taken with respect to the effective, masked weight), from one batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from shrink.data import split_batch
from shrink.errors import DataError
from shrink.pruning.masks import apply_mask, get_mask, weight_of
from shrink.train.loop import LossFn

__all__ = ["dense_gradients", "regrow_masks", "regrow_fraction", "reset_optimizer_state"]


def regrow_fraction(t: int, *, start: int, end: int, fraction: float) -> float:
    """RigL's cosine decay: ``fraction`` at epoch ``start``, falling to 0 at ``end``."""
    if not start <= t < end:
        return 0.0
    return fraction / 2 * (1 + math.cos(math.pi * (t - start) / (end - start)))


def dense_gradients(
    model: nn.Module,
    modules: dict[str, nn.Module],
    loss_fn: LossFn,
    batch: Any,
) -> dict[str, torch.Tensor]:
    """The gradient of ``loss_fn`` on ``batch`` with respect to each module's effective weight, pruned entries
    included (the gradient reaching the unmasked original is zero there)."""
    inputs, target = split_batch(batch)
    with torch.enable_grad(), parametrize.cached():
        weights = {name: weight_of(m) for name, m in modules.items()}
        loss = loss_fn(model, inputs, target)
        grads = torch.autograd.grad(loss, list(weights.values()), allow_unused=True)
    if not torch.isfinite(loss):
        raise DataError(f"regrowth: the loss on its gradient batch is {loss.item()}")
    return {
        name: (g if g is not None else torch.zeros_like(w)).detach()
        for (name, w), g in zip(weights.items(), grads, strict=True)
    }


def _swap(keep: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor, n: int) -> torch.Tensor:
    """``keep`` with its ``n`` smallest-magnitude kept entries dropped and the ``n`` pruned entries of largest
    gradient revived (flat tensors; candidates for revival are the entries pruned before this update)."""
    n = min(n, int(keep.sum()), int((~keep).sum()))
    if n == 0:
        return keep
    magnitude = torch.where(keep, weight.abs(), torch.full_like(weight, math.inf))
    growth = torch.where(keep, torch.full_like(grad, -1.0), grad.abs())
    new = keep.clone()
    new[torch.topk(magnitude, n, largest=False).indices] = False
    new[torch.topk(growth, n).indices] = True
    return new


def reset_optimizer_state(optimizer: torch.optim.Optimizer, param: torch.Tensor, entries: torch.Tensor) -> None:
    """Zero every per-entry state ``optimizer`` keeps for ``param`` (tensors of its shape: Adam's moments, SGD's
    momentum buffer) at the entries where the boolean ``entries`` is True."""
    for value in optimizer.state.get(param, {}).values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            value[entries] = 0


def regrow_masks(
    modules: dict[str, nn.Module],
    grads: dict[str, torch.Tensor],
    fraction: float,
    scope: str = "global",
    optimizer: torch.optim.Optimizer | None = None,
) -> int:
    """Drop ``fraction`` of the kept weights of ``modules`` (over all of them, or in each layer with
    ``scope="layer"``) and revive as many, at zero and with ``optimizer``'s state for them reset; every module must
    already be masked. Returns the number swapped."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"regrow fraction must be in [0, 1], got {fraction}")
    masks: dict[str, torch.Tensor] = {}
    for name, m in modules.items():
        mask = get_mask(m)
        if mask is None:
            raise ValueError(f"regrowth: layer {name!r} has no pruning mask")
        masks[name] = mask
    flat = {name: weight_of(m).detach().reshape(-1) for name, m in modules.items()}
    grad = {name: grads[name].reshape(-1) for name in modules}
    keep = {name: mask.reshape(-1) for name, mask in masks.items()}
    if scope == "global":
        names = list(modules)
        joined = torch.cat([keep[n] for n in names])
        new = _swap(joined, torch.cat([flat[n] for n in names]), torch.cat([grad[n] for n in names]),
                    int(fraction * int(joined.sum())))  # fmt: skip
        parts = dict(zip(names, torch.split(new, [keep[n].numel() for n in names]), strict=True))
    elif scope == "layer":
        parts = {n: _swap(keep[n], flat[n], grad[n], int(fraction * int(keep[n].sum()))) for n in modules}
    else:
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    swapped = 0
    for name, m in modules.items():
        new_mask = parts[name].reshape(masks[name].shape)
        revived = new_mask & ~masks[name]
        swapped += int(revived.sum())
        apply_mask(m, new_mask)
        original = getattr(m, "parametrizations").weight.original  # noqa: B009 (added at run time)
        with torch.no_grad():  # a pruned entry's original may have drifted under the optimizer's momentum
            original[revived] = 0.0
            if optimizer is not None:
                reset_optimizer_state(optimizer, original, revived)
    return swapped
