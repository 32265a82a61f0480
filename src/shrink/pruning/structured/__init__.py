"""Structured pruning: physical removal of channels, attention heads and whole blocks.

Three separate pieces: the dependency graph (:mod:`shrink.graph`), importance criteria
(:mod:`.importance`, :mod:`.lasso`) and per-layer slicing (:mod:`.slicing`).
"""

from shrink.pruning.structured.channel import apply_removal, channel_prune, choose_units, prunable_groups
from shrink.pruning.structured.config import ChannelPruning, LayerRemoval
from shrink.pruning.structured.layers import SkippedLayer, block_candidates, layer_removal, remove_layers
from shrink.pruning.structured.slicing import slice_module, update_head_attributes

__all__ = [
    "ChannelPruning",
    "LayerRemoval",
    "channel_prune",
    "choose_units",
    "apply_removal",
    "prunable_groups",
    "SkippedLayer",
    "block_candidates",
    "layer_removal",
    "remove_layers",
    "slice_module",
    "update_head_attributes",
]
