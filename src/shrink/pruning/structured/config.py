"""Configs for structured pruning: channel/head removal and whole-layer removal."""

from __future__ import annotations

from typing import Literal

import pydantic

from shrink.config import Config, register
from shrink.select import Selector

__all__ = ["ChannelPruning", "LayerRemoval"]


@register("channel_pruning", family="prune")
class ChannelPruning(Config):
    """Physically remove the ``ratio`` least important channels (filters, MLP hidden units) and attention heads.

    Coupled channels (a residual stream, the heads of one attention layer) are scored and removed together, once per
    group. ``importance``: "l1" / "l2" filter norms, "bn_scale" (|BatchNorm gamma|, network slimming), "taylor"
    (first-order Taylor, needs ``train`` or ``calibration`` data), "lasso" (He et al. 2017: LASSO channel selection
    on the next layer's output, then least-squares reconstruction of that layer; needs data). ``scope="uniform"``
    removes the same fraction from every group, ``"global"`` ranks normalized scores across groups (no group loses
    more than ``max_group_ratio``). Kept channel counts are multiples of ``round_to`` where the group allows.
    A grouped convolution's unit is a whole group (its input and output channels), so it loses whole groups.
    A group is pruned only if every weight layer that produces or reads its channels is chosen by ``selector``
    (default: all layers); BatchNorm/LayerNorm layers follow their channels.
    """

    ratio: float = pydantic.Field(..., ge=0.0, lt=1.0)
    #: unit score: 'l1' / 'l2' filter norm, 'bn_scale' |BN gamma|, 'taylor', 'lasso' (these two need data)
    importance: Literal["l1", "l2", "bn_scale", "taylor", "lasso"] = "l1"
    scope: Literal["uniform", "global"] = "uniform"
    round_to: int = pydantic.Field(1, ge=1)
    #: prune attention heads (False: MLP hidden units / conv channels only)
    prune_heads: bool = True
    #: fraction of attention heads removed per attention layer (None: ``ratio``)
    head_ratio: float | None = pydantic.Field(None, ge=0.0, lt=1.0)
    #: prune MLP hidden units / conv channels (False: heads only)
    prune_channels: bool = True
    #: scope 'global': largest fraction of one group's units that may be removed (one always stays)
    max_group_ratio: float = pydantic.Field(0.9, gt=0.0, lt=1.0)
    selector: Selector = Selector(types=())
    #: an op the channel tracer cannot prune through: 'error' raises, 'skip' keeps the channels it touches
    on_unsupported: Literal["error", "skip"] = "error"
    #: batches of data for "taylor" gradients and "lasso" activations
    batches: int = pydantic.Field(4, ge=1)


@register("layer_removal", family="prune")
class LayerRemoval(Config):
    """Remove whole blocks (residual blocks, transformer layers): each becomes an identity on its first input.

    ``layers`` names the blocks to remove; or ``count`` picks that many among the candidates chosen by ``selector``
    (default: every block inside an ``nn.Sequential``/``nn.ModuleList`` whose output has its input's shape), the
    ones whose removal changes the model output least on the example inputs.
    """

    #: names of the blocks to remove (give this or count)
    layers: tuple[str, ...] = ()
    #: remove this many candidate blocks: those whose removal changes the example output least
    count: int | None = pydantic.Field(None, ge=1)
    selector: Selector | None = None

    @pydantic.model_validator(mode="after")
    def _layers_or_count(self) -> LayerRemoval:
        if not self.layers and self.count is None:
            raise ValueError("give either layers=[...] or count=N")
        return self
