"""Pruning: unstructured masks, iterative and gradual schedules, N:M sparsity (structured: shrink.prune.structured)."""

import sys as _sys
import types as _types
from typing import Any

from shrink.prune.magnitude import MagnitudePruning, magnitude_masks, prune_unstructured, unstructured_masks
from shrink.prune.masks import Mask, apply_mask, get_mask, make_permanent, sparsity
from shrink.prune.nm import NMSparsity, pack_nm_model
from shrink.prune.nm_layers import NMSparseConv, NMSparseLinear, pack_nm
from shrink.prune.nm_pattern import check_nm, nm_mask
from shrink.prune.schedule import iterative_sparsities, polynomial_sparsity, polynomial_steps
from shrink.prune.structured import ChannelPruning, LayerRemoval  # noqa: F401  (structured pruning)
from shrink.prune.unstructured import GradualPruning, IterativePruning, layer_sparsities

__all__ = [
    "MagnitudePruning",
    "magnitude_masks",
    "prune_unstructured",
    "unstructured_masks",
    "Mask",
    "apply_mask",
    "get_mask",
    "make_permanent",
    "sparsity",
    "NMSparsity",
    "pack_nm_model",
    "NMSparseConv",
    "NMSparseLinear",
    "pack_nm",
    "check_nm",
    "nm_mask",
    "iterative_sparsities",
    "polynomial_sparsity",
    "polynomial_steps",
    "GradualPruning",
    "IterativePruning",
    "layer_sparsities",
]


class _CallablePackage(_types.ModuleType):
    """Importing ``shrink.prune`` rebinds the attribute ``shrink.prune`` from the verb to this package; calling the
    package runs the verb, so ``shrink.prune(model, config, ...)`` works whatever was imported first."""

    def __call__(self, model: Any, config: Any, **kwargs: Any) -> Any:
        from shrink.api import prune

        return prune(model, config, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
