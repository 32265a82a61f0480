"""Unstructured magnitude pruning (Han et al., 2015): zero the smallest-magnitude weights, per layer or globally."""

from __future__ import annotations

from typing import Literal

import pydantic
import torch
from torch import nn

from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.prune.masks import apply_mask
from shrink.select import Selector, select_modules

__all__ = ["MagnitudePruning", "magnitude_masks"]


@register("magnitude_pruning", family="prune")
class MagnitudePruning(Config):
    """Zero the ``sparsity`` fraction of weights with the smallest magnitude.

    ``scope="global"`` ranks all selected weights together (layers end with different sparsities);
    ``"layer"`` prunes each layer to the same sparsity. ``criterion="random"`` is the random baseline.
    """

    sparsity: float = pydantic.Field(..., ge=0.0, lt=1.0)
    scope: Literal["global", "layer"] = "global"
    criterion: Literal["magnitude", "random"] = "magnitude"
    selector: Selector = Selector()
    seed: int = 0


def _scores(weight: torch.Tensor, criterion: str, gen: torch.Generator) -> torch.Tensor:
    if criterion == "random":
        return torch.rand(weight.shape, generator=gen)
    return weight.detach().abs().float()


def magnitude_masks(modules: dict[str, nn.Module], config: MagnitudePruning) -> dict[str, torch.Tensor]:
    """Keep-masks (True = keep) for each module's weight. Already-zero weights rank lowest and stay pruned."""
    gen = torch.Generator().manual_seed(config.seed)
    scores = {name: _scores(m.weight, config.criterion, gen) for name, m in modules.items()}
    if config.scope == "global":
        flat = torch.cat([s.reshape(-1) for s in scores.values()])
        k = int(round(config.sparsity * flat.numel()))
        if k == 0:
            return {name: torch.ones_like(s, dtype=torch.bool) for name, s in scores.items()}
        threshold = torch.kthvalue(flat, k).values
        masks = {name: s > threshold for name, s in scores.items()}
        # ties at the threshold: keep exactly numel - k overall by pruning ties in order
        excess = sum(int(m.sum()) for m in masks.values()) - (flat.numel() - k)
        if excess < 0:
            for name, s in scores.items():
                ties = ((s == threshold) & ~masks[name]).reshape(-1).nonzero().squeeze(1)
                take = ties[: -excess]
                masks[name].view(-1)[take] = True
                excess += take.numel()
                if excess >= 0:
                    break
        return masks
    masks = {}
    for name, s in scores.items():
        k = int(round(config.sparsity * s.numel()))
        mask = torch.ones(s.numel(), dtype=torch.bool)
        if k:
            mask[torch.argsort(s.reshape(-1), stable=True)[:k]] = False
        masks[name] = mask.reshape(s.shape)
    return masks


@implements(MagnitudePruning)
def magnitude_prune(model: nn.Module, config: MagnitudePruning, ctx: Context) -> nn.Module:
    """Attach magnitude masks to the selected layers (masks stay until ``make_permanent``)."""
    modules = select_modules(model, config.selector, where="magnitude_pruning.selector")
    for name, mask in magnitude_masks(modules, config).items():
        apply_mask(modules[name], mask)
    return model
