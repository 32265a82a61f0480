"""AWQ as its own stage (``awq``, Lin et al. 2024, "Activation-aware weight quantization"): before weight-only
rounding, scale up the input channels of each Linear weight that carry large activations and divide the input by
the same factors, so that the weights that matter most lose least when rounded.

The model stays float and equivalent: each selected Linear becomes a :class:`PreparedLinear` whose weight is
multiplied by ``s`` per input channel and whose input is divided by ``s`` (``input_smooth``). The factors
``s = mean|x|^alpha`` are searched per layer on calibration rows (padding left out) for the grid that ``bits``,
``group_size`` and ``asymmetric`` describe; list ``awq`` before ``gptq`` or ``signround`` (optional) and
``weight_only`` with the same values.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import pydantic
import torch
from torch import nn

from shrink._parametrize import bake_parametrizations
from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.errors import DataError
from shrink.quant.algorithms.group_rounding import awq_input_scales, check_asymmetric
from shrink.quant.algorithms.input_rows import layer_input_rows
from shrink.quant.layers.convert import check_group, check_weights, selected_layers, set_module
from shrink.quant.layers.prepared import PreparedLinear, check_unscaled
from shrink.select import Selector

__all__ = ["AWQ", "awq_scale", "AWQ_ROWS"]

#: calibration rows per layer kept for the scale search
AWQ_ROWS = 2048


@register("awq", family="quantize")
class AWQ(Config):
    """Scale Linear input channels by their calibration activation sizes before weight-only rounding (AWQ); the
    float model is unchanged in value. List it before gptq / weight_only, with their bits and group_size."""

    prepares: ClassVar[bool] = True

    #: bits of the weight_only grid the scales are searched for
    bits: Literal[4, 8] = 4
    #: inputs per scale of that grid (None: one scale per row)
    group_size: Literal[32, 64, 128] | None = 32
    #: int4 only: search the scales for an asymmetric grid (a zero point per group), as weight_only will store it
    asymmetric: bool = False
    selector: Selector = Selector(types=("Linear",))
    calibration_batches: int | None = pydantic.Field(default=None, ge=1)

    @pydantic.model_validator(mode="after")
    def _zero_points_int4(self) -> AWQ:
        check_asymmetric(self.asymmetric, self.bits)
        return self


@implements(AWQ)
@torch.no_grad()
def awq_scale(model: nn.Module, config: AWQ, ctx: Context) -> nn.Module:
    """Search and apply the input scales of the selected Linears (in place; ``apply`` hands us a copy)."""
    bake_parametrizations(model)
    check_weights(model)
    layers = selected_layers(model, config.selector, "awq.selector", (nn.Linear, PreparedLinear))
    for name, layer in layers.items():
        check_unscaled("awq", name, layer)
        check_group("awq", name, int(layer.in_features), config.group_size)  # type: ignore[arg-type]
    try:
        rows = layer_input_rows(model, layers, ctx.calibration, AWQ_ROWS, config.calibration_batches)
    except DataError as err:
        raise DataError(f"awq: {err}") from err
    alphas = []
    for name, layer in layers.items():
        assert isinstance(layer, nn.Linear)
        weight = layer.weight.detach().float()
        group = config.group_size or weight.shape[1]
        s, alpha = awq_input_scales(rows[name], weight, config.bits, group, config.asymmetric)
        prepared = PreparedLinear.from_linear(layer)
        prepared.weight.copy_((weight * s).to(prepared.weight.dtype))
        prepared.set_smoothing(1.0 / s)
        set_module(model, name, prepared)
        alphas.append(alpha)
    mean = sum(alphas) / max(len(alphas), 1)
    ctx.notes.append(
        f"awq: input scales of {len(layers)} Linear layers searched for int{config.bits} "
        f"{'asymmetric ' if config.asymmetric else ''}"
        f"{'per-row' if config.group_size is None else f'group {config.group_size}'} grids "
        f"(mean alpha {mean:.2f}; float, same outputs)"
    )
    return model
