"""Static post-training quantization (``int8_static``): fold BN, fuse ReLU, calibrate activation ranges, quantize
weights per channel (symmetric int8, or int4 values for W4A8), optional bias correction, convert.

The result simulates integer inference in PyTorch (fake-quant) and exports a QDQ ONNX graph with int8 weight
initializers that ONNX Runtime runs on integer kernels.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic
import torch
from torch import nn

from shrink._parametrize import bake_parametrizations
from shrink.api import Context, implements
from shrink.config import Config, refuse_moved_fields, register
from shrink.data import forward_pre_hooks
from shrink.quant.algorithms.calibrate import LayerObservers, calibrating, run_calibration
from shrink.quant.algorithms.fold import fold_and_fuse
from shrink.quant.algorithms.observers import make_observer
from shrink.quant.layers.convert import (
    check_weights,
    effective_weight_bits,
    quantized_layer,
    selected_layers,
    set_module,
)
from shrink.quant.layers.modules import QuantConv2d, QuantLinear, act_qparams_u8
from shrink.quant.layers.prepared import PreparedLinear, recorded_grid
from shrink.quant.onnx.export import attach_export
from shrink.select import Selector

__all__ = ["Int8Static", "quantize_static", "correct_bias"]

ObserverName = Literal["minmax", "moving_average", "percentile", "mse", "entropy", "aciq_laplace", "aciq_gaussian"]


#: fields that moved to stages of their own: name -> how to write it now
MOVED_FIELDS = {
    "smooth": "list a smooth_quant stage (alpha=...) before int8_static",
    "weight_rounding": "list a gptq stage before int8_static for GPTQ rounding",
    "gptq_sequential": "use the gptq stage's 'sequential'",
    "dynamic": "quantize those layers with an int8_dynamic stage (and leave them out of this selector)",
    "dynamic_granularity": "use int8_dynamic's 'granularity'",
    "embedding_group_size": "quantize embedding tables with weight_only (bits 8, group_size ...)",
}


@register("int8_static", family="quantize")
class Int8Static(Config):
    """Static PTQ: calibrated asymmetric u8 activations, per-channel symmetric weights (8 bits, or 4 → W4A8)."""

    observer: ObserverName = "percentile"
    #: with observer 'percentile': activation ranges clip at this percentile (and at 100 - it below)
    percentile: float = pydantic.Field(99.99, gt=50.0, le=100.0)
    weight_bits: int = pydantic.Field(8, ge=2, le=8)
    weight_observer: Literal["minmax", "mse", "aciq_laplace", "aciq_gaussian"] = "minmax"
    activation_bits: int = pydantic.Field(8, ge=2, le=8)
    #: "auto": on x86 CPUs without VNNI, ONNX weights are stored as uint8 + 128 (see convert.effective_weight_bits)
    weight_range: Literal["auto", "full", "reduced", "u8"] = "auto"
    per_channel: bool = True
    #: subtract from each bias the mean output shift weight rounding causes on calibration data
    bias_correction: bool = False
    #: also calibrate and quantize each static layer's output (False: outputs stay float)
    quantize_outputs: bool = True
    selector: Selector = Selector()
    calibration_batches: int | None = pydantic.Field(None, ge=1)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        refuse_moved_fields("int8_static", data, MOVED_FIELDS)
        return data


def _weight_qparams(layer: nn.Module, config: Int8Static, name: str, bits: int):  # noqa: ANN202
    """The grid an earlier gptq stage rounded ``layer`` onto, else the one ``config``'s observer chooses."""
    recorded = recorded_grid(layer, bits, f"int8_static: layer {name!r}")
    if recorded is not None:
        return recorded
    weight = layer.weight
    assert isinstance(weight, torch.Tensor)
    weight = weight.detach()
    obs = make_observer(
        config.weight_observer,
        bits,
        symmetric=True,
        signed=True,
        axis=0 if config.per_channel else None,
        narrow_range=True,
        name=f"{name}.weight",
    )
    obs.update(weight)
    qp = obs.qparams()
    if not config.per_channel:  # one scale, repeated per channel for the per-axis storage
        qp = type(qp)(
            qp.scale.expand(weight.shape[0]).clone(),
            qp.zero_point.expand(weight.shape[0]).clone(),
            qp.bits,
            qp.signed,
            0,
            None,
            qp.narrow_range,
        )
    return qp


def _act_observer(config: Int8Static):  # noqa: ANN202
    def make(name: str):  # noqa: ANN202
        kw = {"percentile": config.percentile} if config.observer == "percentile" else {}
        return make_observer(config.observer, config.activation_bits, signed=False, name=name, **kw)

    return make


@torch.no_grad()
def correct_bias(model: nn.Module, float_weights: dict[str, torch.Tensor], data, limit: int | None) -> None:  # noqa: ANN001
    """Remove the expected output shift that weight rounding causes (Banner et al. / Nagel et al.):
    ``bias -= E[(W_q - W) x]`` per output channel, with ``x`` the layer's (quantized) input on calibration data."""
    mods = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = {}
    for name, w in float_weights.items():

        def pre(mod: nn.Module, args, name: str = name, w: torch.Tensor = w) -> None:  # noqa: ANN001
            assert isinstance(mod, (QuantLinear, QuantConv2d))  # float_weights names layers quantized by the caller
            x = mod._input(args[0])
            wq = mod.dequantized_weight()
            if isinstance(mod, QuantConv2d):  # the only quantized layer with a 4-D weight
                diff = nn.functional.conv2d(x, wq - w, None, mod.stride, mod.padding, mod.dilation, mod.groups)
                diff = diff.transpose(0, 1).reshape(diff.shape[1], -1)
            else:
                diff = nn.functional.linear(x, wq - w).reshape(-1, wq.shape[0]).t()
            sums[name] = sums.get(name, 0) + diff.sum(dim=1)
            counts[name] = counts.get(name, 0) + diff.shape[1]

        hooks[mods[name]] = pre
    with forward_pre_hooks(hooks):
        run_calibration(model, data, limit)
    for name, total in sums.items():
        layer = mods[name]
        shift = total / counts[name]
        if layer.bias is None:
            layer.bias = nn.Parameter(-shift)
        else:
            layer.bias.sub_(shift)


def _calibrate(
    model: nn.Module, layers: dict[str, nn.Module], relu_layers: set[str], config: Int8Static, ctx: Context
) -> tuple[dict[str, LayerObservers], int]:
    """Activation ranges of every layer's input (and output); returns the observers and the batches read."""
    with calibrating(
        model, layers, _act_observer(config), observe_outputs=config.quantize_outputs, relu_layers=relu_layers
    ) as observers:
        batches = run_calibration(model, ctx.calibration, config.calibration_batches)
    return observers, batches


def _convert(
    model: nn.Module,
    layers: dict[str, nn.Module],
    relu_layers: set[str],
    observers: dict[str, LayerObservers],
    config: Int8Static,
    notes: list[str],
) -> dict[str, torch.Tensor]:
    """Swap each layer for its quantized version (round-to-nearest codes, or the gptq stage's codes on its grid;
    a smoothed layer keeps its input division); returns the float weights, which bias correction starts from."""
    float_weights = {}
    wbits, u8, range_note = effective_weight_bits(config.weight_bits, config.weight_range)
    if range_note:
        notes.append(f"int8_static: {range_note}")
    for name, layer in layers.items():
        assert isinstance(layer, (nn.Linear, nn.Conv2d))  # selected_layers admitted only these
        q = quantized_layer(layer, wbits, "static", config.activation_bits, name in relu_layers)
        q.set_weight(layer.weight.detach(), _weight_qparams(layer, config, name, wbits))
        q.set_input_qparams(act_qparams_u8(*observers[name].input.bounds(), bits=config.activation_bits))
        out_obs = observers[name].output
        if out_obs is not None:
            q.set_output_qparams(act_qparams_u8(*out_obs.bounds(), bits=config.activation_bits))
        float_weights[name] = layer.weight.detach().clone()
        q.onnx_u8_weights = u8
        set_module(model, name, q)
    return float_weights


def quantize_static(model: nn.Module, config: Int8Static, ctx: Context) -> nn.Module:
    """Fold, calibrate, quantize and convert ``model`` (in place; ``apply`` hands us a copy)."""
    bake_parametrizations(model)  # pruning masks etc. become plain weights (our copy)
    check_weights(model)
    relu_layers, notes = fold_and_fuse(model)
    supported = (nn.Linear, PreparedLinear, nn.Conv2d)
    layers = selected_layers(model, config.selector, "int8_static.selector", supported)
    observers, batches = _calibrate(model, layers, relu_layers, config, ctx)
    float_weights = _convert(model, layers, relu_layers, observers, config, notes)
    if config.bias_correction:
        correct_bias(model, float_weights, ctx.calibration, config.calibration_batches)
    rounded = sum(
        recorded_grid(m, m.grid_bits or 0, "") is not None for m in layers.values() if isinstance(m, PreparedLinear)
    )
    smoothed = sum(getattr(m, "input_smooth", None) is not None for m in layers.values())
    notes.append(
        f"int8_static: {len(layers)} layers quantized (W{config.weight_bits}A{config.activation_bits}, observer "
        f"{config.observer}, weights {'per-channel' if config.per_channel else 'per-tensor'} "
        f"{config.weight_observer}), calibrated on {batches} batches"
        + (", bias corrected" if config.bias_correction else "")
        + (f", {rounded} with the gptq stage's codes" if rounded else "")
        + (f", {smoothed} smoothed" if smoothed else "")
    )
    notes.append("int8_static: PyTorch figures are simulated (fake-quant); the ONNX export runs integer kernels")
    ctx.notes.extend(notes)
    return attach_export(model)


implements(Int8Static)(quantize_static)
