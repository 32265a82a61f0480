"""GPTQ as its own stage (``gptq``, Frantar et al. 2023): round Linear weights onto their integer grid with error
feedback on calibration inputs, before the quantization scheme is applied.

Each selected Linear becomes a :class:`PreparedLinear` whose float weight lies on a per-output-channel symmetric
grid (recorded on the layer); ``int8_static`` / ``int8_dynamic`` then store exactly these codes instead of rounding
to nearest. Padding tokens (a batch's ``attention_mask``) are left out of the Hessians.
"""

from __future__ import annotations

from typing import Literal

import pydantic
import torch
from torch import nn

from shrink._parametrize import bake_parametrizations
from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.quant.algorithms.gptq import execution_groups, gptq_codes, input_hessians
from shrink.quant.algorithms.observers import channel_grid
from shrink.quant.layers.convert import check_weights, selected_layers, set_module
from shrink.quant.layers.prepared import PreparedLinear
from shrink.quant.numerics.qparams import dequantize
from shrink.select import Selector

__all__ = ["GPTQ", "gptq_round"]


@register("gptq", family="quantize")
class GPTQ(Config):
    """Round Linear weights onto their int grid with GPTQ error feedback (the model stays float); list it before
    int8_static / int8_dynamic, which keep these codes."""

    #: bits of the grid (per output channel, symmetric); the quantization stage that follows must use the same
    bits: int = pydantic.Field(default=8, ge=2, le=8)
    #: how each output channel's range (its grid) is chosen
    observer: Literal["minmax", "mse"] = "minmax"
    #: Hessians layer by layer from the outputs of the layers already rounded (False: one pass over the model)
    sequential: bool = False
    selector: Selector = Selector(types=("Linear",))
    calibration_batches: int | None = pydantic.Field(default=None, ge=1)


@torch.no_grad()
def _round(layers: dict[str, PreparedLinear], hessians: dict[str, torch.Tensor], config: GPTQ) -> None:
    for name, layer in layers.items():
        grid = channel_grid(layer.weight, config.bits, config.observer, name)
        codes = gptq_codes(layer.weight.detach(), hessians[name], grid)
        layer.weight.copy_(dequantize(codes, grid).to(layer.weight.dtype))
        layer.set_grid(grid.scale, config.bits)


@implements(GPTQ)
def gptq_round(model: nn.Module, config: GPTQ, ctx: Context) -> nn.Module:
    """Round the selected Linears' weights in place (``apply`` hands us a copy)."""
    bake_parametrizations(model)
    check_weights(model)
    chosen = selected_layers(model, config.selector, "gptq.selector", (nn.Linear, PreparedLinear))
    layers: dict[str, PreparedLinear] = {}
    for name, layer in chosen.items():
        assert isinstance(layer, nn.Linear)
        layers[name] = PreparedLinear.from_linear(layer)
        set_module(model, name, layers[name])
    scales = {n: s for n, m in layers.items() if (s := m.input_smooth) is not None}
    data, limit = ctx.calibration, config.calibration_batches
    if config.sequential:
        groups = execution_groups(model, layers, data)
        for group in groups:
            members = {n: layers[n] for n in group}
            _round(
                members, input_hessians(model, members, data, limit, input_scales=scales, stop_after=group[-1]), config
            )
    else:
        _round(layers, input_hessians(model, layers, data, limit, input_scales=scales), config)
    how = f"layer by layer ({len(groups)} calibration passes)" if config.sequential else "from one calibration pass"
    ctx.notes.append(f"gptq: {len(layers)} Linear layers rounded onto {config.bits}-bit grids, Hessians {how}")
    return model
