"""Pruning: unstructured masks, iterative and gradual schedules, N:M sparsity (structured: ``.structured``)."""

from shrink.pruning.magnitude import MagnitudePruning, magnitude_masks, prune_unstructured, unstructured_masks
from shrink.pruning.masks import Mask, apply_mask, get_mask, make_permanent, sparsity
from shrink.pruning.nm import NMSparsity, pack_nm_model
from shrink.pruning.nm_layers import NMSparseConv, NMSparseLinear, pack_nm
from shrink.pruning.nm_pattern import check_nm, nm_mask
from shrink.pruning.schedule import iterative_sparsities, polynomial_sparsity, polynomial_steps
from shrink.pruning.structured import ChannelPruning, LayerRemoval
from shrink.pruning.unstructured import GradualPruning, IterativePruning, layer_sparsities

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
