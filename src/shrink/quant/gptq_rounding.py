"""GPTQ as its own stage (``gptq``, Frantar et al. 2023): round Linear weights onto their integer grid with error
feedback on calibration inputs, before the quantization scheme is applied.

Each selected Linear becomes a :class:`PreparedLinear` whose float weight lies on a symmetric grid recorded on the
layer: one scale per output channel (``group_size=None``; ``int8_static`` / ``int8_dynamic`` and per-row ``weight_only``
then store exactly these codes), or one fp16 scale per ``group_size`` inputs (``weight_only`` with the same group size).
An int4 grid may be asymmetric (``asymmetric``: a zero point per scale, which only ``weight_only`` with
``asymmetric=True`` stores). Padding tokens (a batch's ``attention_mask``) are left out of the Hessians.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import pydantic
import torch
from torch import nn

from shrink._parametrize import bake_parametrizations
from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.quant.algorithms.gptq import execution_groups, gptq_codes, input_hessians
from shrink.quant.algorithms.group_rounding import SCALE_DTYPE, check_asymmetric, dequantize_groups, gptq_group_codes
from shrink.quant.algorithms.observers import channel_grid
from shrink.quant.layers.convert import check_weights
from shrink.quant.layers.prepared import PreparedLinear, prepare_for_rounding
from shrink.quant.numerics.qparams import dequantize
from shrink.select import Selector

__all__ = ["GPTQ", "gptq_round"]


@register("gptq", family="quantize")
class GPTQ(Config):
    """Round Linear weights onto their int grid with GPTQ error feedback (the model stays float); list it before
    int8_static / int8_dynamic / weight_only, which keep these codes."""

    prepares: ClassVar[bool] = True

    #: bits of the grid; the quantization stage that follows must use the same
    bits: int = pydantic.Field(default=8, ge=2, le=8)
    #: inputs per scale (weight_only's groups, fp16 scales); None: one scale per output channel
    group_size: Literal[32, 64, 128] | None = None
    #: how each output channel's range is chosen (per-channel grids; group grids keep each group's largest weight)
    observer: Literal["minmax", "mse"] = "minmax"
    #: Hessians layer by layer from the outputs of the layers already rounded (False: one pass over the model)
    sequential: bool = False
    #: group grids: round the inputs with the most energy first, on group scales fixed from the unrounded weights
    #: (GPTQ's act-order with static groups; the groups stay contiguous, so the int4 kernels run it as before)
    act_order: bool = False
    #: group grids: search each group's scale among clipped ones for the smallest rounding error weighted by each
    #: input's energy (diag of the Hessian) instead of keeping the group's largest weight
    clip: bool = False
    #: int4 only: each scale's range from the group's minimum to its maximum over all 16 levels, with a zero point
    #: (weight_only must then store asymmetric=True too)
    asymmetric: bool = False
    selector: Selector = Selector(types=("Linear",))
    calibration_batches: int | None = pydantic.Field(default=None, ge=1)

    @pydantic.model_validator(mode="after")
    def _settings_agree(self) -> GPTQ:
        check_asymmetric(self.asymmetric, self.bits)
        if self.group_size is not None and self.observer != "minmax":
            raise ValueError(
                f"observer {self.observer!r} chooses per-channel grids; group grids (group_size) "
                "set each group's scale themselves: leave observer at 'minmax'"
            )
        for name in ("act_order", "clip"):
            if getattr(self, name) and self.group_size is None:
                raise ValueError(f"{name} applies to group grids: set group_size (32, 64 or 128) or leave {name} off")
        return self


@torch.no_grad()
def _round(layers: dict[str, PreparedLinear], hessians: dict[str, torch.Tensor], config: GPTQ) -> None:
    for name, layer in layers.items():
        w = layer.weight.detach()
        if config.group_size is None and not config.asymmetric:
            grid = channel_grid(layer.weight, config.bits, config.observer, name)
            rounded, scale, zero = dequantize(gptq_codes(w, hessians[name], grid), grid), grid.scale, None
        else:
            codes, scale, zero = gptq_group_codes(
                w.float(),
                hessians[name],
                config.bits,
                config.group_size or layer.in_features,
                scale_dtype=SCALE_DTYPE,
                act_order=config.act_order,
                clip=config.clip,
                asymmetric=config.asymmetric,
            )
            rounded = dequantize_groups(codes, scale, zero)
        layer.weight.copy_(rounded.to(layer.weight.dtype))
        layer.set_grid(scale, config.bits, config.group_size, zero)


@implements(GPTQ)
def gptq_round(model: nn.Module, config: GPTQ, ctx: Context) -> nn.Module:
    """Round the selected Linears' weights in place (``apply`` hands us a copy)."""
    bake_parametrizations(model)
    check_weights(model)
    layers = prepare_for_rounding(model, config.selector, "gptq", config.group_size)
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
    grid = "per-channel" if config.group_size is None else f"group {config.group_size}"
    ctx.notes.append(f"gptq: {len(layers)} Linear layers rounded onto {config.bits}-bit {grid} grids, Hessians {how}")
    return model
