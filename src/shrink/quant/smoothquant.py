"""SmoothQuant as its own stage (``smooth_quant``, Xiao et al. 2023): migrate per-channel activation outliers of
Linear inputs into the weights before they are quantized.

The model stays float and equivalent: each selected Linear becomes a :class:`PreparedLinear` whose weight is
scaled by ``s`` per input channel and whose input is divided by ``s``. List it before ``gptq`` and
``int8_static`` / ``int8_dynamic``, which keep the division (an ONNX ``Mul``) in front of the integer GEMM.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import pydantic
from torch import nn

from shrink._parametrize import bake_parametrizations
from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.quant.algorithms.smooth import smooth_layers
from shrink.quant.layers.convert import check_weights, selected_layers, set_module
from shrink.quant.layers.prepared import PreparedLinear, check_unscaled
from shrink.select import Selector

__all__ = ["SmoothQuant", "smooth_quant"]


@register("smooth_quant", family="quantize")
class SmoothQuant(Config):
    """Move activation outliers of Linear inputs into the weights (float model unchanged in value); list it first."""

    prepares: ClassVar[bool] = True

    #: migration strength: 0 leaves the inputs as they are, 1 moves all of their range into the weights;
    #: "auto": the strength with the least quantized output error, searched per input on calibration rows
    alpha: Annotated[float, pydantic.Field(ge=0.0, le=1.0)] | Literal["auto"] = 0.5
    #: the activations will be quantized per token (int8_dynamic granularity 'token'); the 'auto' search measures that
    per_token: bool = False
    selector: Selector = Selector(types=("Linear",))
    calibration_batches: int | None = pydantic.Field(default=None, ge=1)


@implements(SmoothQuant)
def smooth_quant(model: nn.Module, config: SmoothQuant, ctx: Context) -> nn.Module:
    """Scale the selected Linears' weights and divide their inputs (in place; ``apply`` hands us a copy)."""
    bake_parametrizations(model)
    check_weights(model)
    layers = selected_layers(model, config.selector, "smooth_quant.selector", (nn.Linear, PreparedLinear))
    for name, layer in layers.items():
        check_unscaled("smooth_quant", name, layer)
    per_token = set(layers) if config.per_token else set()
    inverse, hooks = smooth_layers(model, layers, ctx.calibration, config.alpha, config.calibration_batches, per_token)
    for h in hooks:
        h.remove()
    for name, layer in layers.items():
        assert isinstance(layer, nn.Linear)
        prepared = PreparedLinear.from_linear(layer)  # the weight is already scaled, in place
        prepared.set_smoothing(inverse[name])
        set_module(model, name, prepared)
    ctx.notes.append(f"smooth_quant: alpha={config.alpha} on {len(inverse)} Linear layers (float, same outputs)")
    return model
