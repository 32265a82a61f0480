"""Pruning: unstructured masks, structured channel removal, N:M sparsity, schedules."""

from shrink.prune.magnitude import MagnitudePruning, magnitude_masks
from shrink.prune.masks import Mask, apply_mask, get_mask, make_permanent, sparsity

__all__ = ["MagnitudePruning", "magnitude_masks", "Mask", "apply_mask", "get_mask", "make_permanent", "sparsity"]
