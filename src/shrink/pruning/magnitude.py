"""Unstructured magnitude pruning (Han et al., 2015): zero the smallest-magnitude weights, per layer or globally,
with random pruning as the baseline a criterion has to beat."""

from __future__ import annotations

import warnings
from typing import Literal

import pydantic
import torch
from torch import nn

from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.errors import ModelError
from shrink.pruning.masks import apply_mask, get_mask, weight_of
from shrink.select import Selector, select_modules

__all__ = ["MagnitudePruning", "magnitude_masks", "unstructured_masks", "prune_unstructured"]

Scope = Literal["global", "layer"]
Criterion = Literal["magnitude", "random"]


@register("magnitude_pruning", family="prune")
class MagnitudePruning(Config):
    """Zero the ``sparsity`` fraction of weights with the smallest magnitude, in one shot.

    ``scope="global"`` ranks all selected weights together (layers end with different sparsities);
    ``"layer"`` prunes each layer to the same sparsity. ``criterion="random"`` is the random baseline.
    """

    sparsity: float = pydantic.Field(..., ge=0.0, lt=1.0)
    scope: Scope = "global"
    criterion: Criterion = "magnitude"
    selector: Selector = Selector()
    seed: int = 0


def _scores(module: nn.Module, criterion: str, gen: torch.Generator) -> torch.Tensor:
    """Importance of each weight; weights an existing mask removed score -1 so they stay pruned."""
    weight = weight_of(module).detach()
    if criterion == "random":
        scores = torch.rand(weight.shape, generator=gen)
    elif criterion == "magnitude":
        scores = weight.abs().float().cpu()
    else:
        raise ValueError(f"criterion must be 'magnitude' or 'random', got {criterion!r}")
    old = get_mask(module)
    if old is not None:
        scores = torch.where(old.cpu(), scores, torch.full_like(scores, -1.0))
    return scores


def unstructured_masks(
    modules: dict[str, nn.Module], sparsity: float, scope: str = "global", criterion: str = "magnitude", seed: int = 0
) -> dict[str, torch.Tensor]:
    """Keep-masks (True = keep) pruning exactly ``round(sparsity * numel)`` weights, over all ``modules`` together
    (``scope="global"``) or in each layer (``"layer"``). Weights already masked out are pruned first and never
    revived, so a target below the current sparsity leaves the masks as they are."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    gen = torch.Generator().manual_seed(seed)
    scores = {name: _scores(m, criterion, gen) for name, m in modules.items()}
    if scope == "global":
        flat = torch.cat([s.reshape(-1) for s in scores.values()])
        keep = _keep_largest(flat, int(round(sparsity * flat.numel())))
        masks, offset = {}, 0
        for name, s in scores.items():
            masks[name] = keep[offset : offset + s.numel()].reshape(s.shape)
            offset += s.numel()
    elif scope == "layer":
        masks = {
            name: _keep_largest(s.reshape(-1), int(round(sparsity * s.numel()))).reshape(s.shape)
            for name, s in scores.items()
        }
    else:
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    for name, m in modules.items():  # masks only tighten: a lower target than the current sparsity keeps it
        old = get_mask(m)
        if old is not None:
            masks[name] &= old.cpu()
    return masks


def _keep_largest(flat: torch.Tensor, n_prune: int) -> torch.Tensor:
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if n_prune:
        keep[torch.argsort(flat, stable=True)[:n_prune]] = False
    return keep


def magnitude_masks(modules: dict[str, nn.Module], config: MagnitudePruning) -> dict[str, torch.Tensor]:
    """Keep-masks for ``config`` (see :func:`unstructured_masks`)."""
    return unstructured_masks(modules, config.sparsity, config.scope, config.criterion, config.seed)


def prune_unstructured(
    modules: dict[str, nn.Module], sparsity: float, scope: str = "global", criterion: str = "magnitude", seed: int = 0
) -> None:
    """Attach (or tighten) the masks of ``modules`` so that ``sparsity`` of their weights are zero."""
    for name, mask in unstructured_masks(modules, sparsity, scope, criterion, seed).items():
        apply_mask(modules[name], mask.to(weight_of(modules[name]).device))


def prunable_modules(model: nn.Module, selector: Selector, where: str, ctx: Context) -> dict[str, nn.Module]:
    """The layers ``selector`` chooses for unstructured pruning. Recurrent layers (LSTM / GRU / RNN) hold several
    weight tensors per layer, which unstructured pruning does not mask: they are refused by name when selected, and
    otherwise named in a warning and the notes, since the sparsity figures do not count them."""
    modules = select_modules(model, selector, where=where)
    chosen = [n for n, m in modules.items() if isinstance(m, nn.RNNBase)]
    if chosen:
        raise ModelError(
            f"{where}: {chosen[0]!r} is a {type(modules[chosen[0]]).__name__}, whose weights (weight_ih_l0, "
            "weight_hh_l0, ...) unstructured pruning does not mask (it prunes Linear and Conv weights): drop it from "
            "the selector"
        )
    left = {n: m for n, m in model.named_modules() if isinstance(m, nn.RNNBase)}
    if left:
        weights = sum(p.numel() for m in left.values() for p in m.parameters() if p.dim() > 1)
        message = (
            f"{where.split('.')[0]}: recurrent layers are not pruned ({', '.join(repr(n) for n in left)}: "
            f"{weights:,} weights kept); the sparsity is over the selected Linear / Conv layers"
        )
        warnings.warn(message, stacklevel=2)
        ctx.notes.append(message)
    return modules


@implements(MagnitudePruning)
def magnitude_prune(model: nn.Module, config: MagnitudePruning, ctx: Context) -> nn.Module:
    """Attach magnitude masks to the selected layers (masks stay until ``make_permanent``)."""
    modules = prunable_modules(model, config.selector, "magnitude_pruning.selector", ctx)
    prune_unstructured(modules, config.sparsity, config.scope, config.criterion, config.seed)
    return model
