"""Importance of each unit of a channel group: ``importance(group, tensors[, grads]) -> scores`` (higher = keep).

Every criterion scores the whole coupled group at once, summing over all the layers the unit lives in.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from shrink.graph import ChannelGroup

__all__ = ["l1_importance", "l2_importance", "bn_scale_importance", "taylor_importance", "per_position"]


def per_position(t: torch.Tensor, dim: int, fn: str) -> torch.Tensor:
    """Reduce every dim but ``dim``: "abs" (sum |x|), "sq" (sum x^2) or "sum"."""
    t = t.detach().float().movedim(dim, 0).reshape(t.shape[dim], -1)
    return {"abs": t.abs().sum(1), "sq": t.pow(2).sum(1), "sum": t.sum(1)}[fn]


def _filters(group: ChannelGroup) -> list[tuple[str, int]]:
    return group.keys("out") or group.keys()


def l1_importance(group: ChannelGroup, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """L1 norm of each unit's filters (Li et al., 2016), summed over the coupled producing layers."""
    return group.unit_scores({k: per_position(tensors[k[0]], k[1], "abs") for k in _filters(group)})


def l2_importance(group: ChannelGroup, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """L2 norm of each unit's filters over the coupled producing layers."""
    return group.unit_scores({k: per_position(tensors[k[0]], k[1], "sq") for k in _filters(group)}).sqrt()


def bn_scale_importance(group: ChannelGroup, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """Sum of |gamma| of the BatchNorm/LayerNorm layers the unit passes through (network slimming, Liu et al.
    2017); None if the group has no norm layer."""
    keys = group.keys("norm")
    if not keys:
        return None
    return group.unit_scores({k: tensors[k[0]].detach().abs().float() for k in keys})


def taylor_importance(
    group: ChannelGroup, tensors: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """First-order Taylor estimate of the loss change when a unit is removed (Molchanov et al., 2019):
    |sum of weight x gradient| over the unit's filters and norm scales, from gradients accumulated on data."""
    keys = [k for k in group.keys("out", "norm") if k[0] in grads]  # noqa: SIM118 or [k for k in group.keys() if k[0] in grads]
    per = {k: per_position(tensors[k[0]] * grads[k[0]], k[1], "sum") for k in keys}
    return group.unit_scores(per).abs()
