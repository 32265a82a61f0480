"""Pruning: unstructured masks, iterative and gradual schedules, N:M sparsity (structured: shrink.prune.structured)."""

from shrink.prune.magnitude import MagnitudePruning, magnitude_masks, prune_unstructured, unstructured_masks
from shrink.prune.masks import Mask, apply_mask, get_mask, make_permanent, sparsity
from shrink.prune.nm import NMSparsity, pack_nm_model
from shrink.prune.nm_layers import NMSparseConv, NMSparseLinear, pack_nm
from shrink.prune.nm_pattern import check_nm, nm_mask
from shrink.prune.schedule import iterative_sparsities, polynomial_sparsity, polynomial_steps
from shrink.prune.structured import ChannelPruning, LayerRemoval
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
    "ChannelPruning",
    "LayerRemoval",
]


from shrink.api import callable_package, prune  # noqa: E402

callable_package(__name__, prune)
