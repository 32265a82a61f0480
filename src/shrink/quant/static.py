"""Static post-training quantization (``int8_static``): fold BN, fuse ReLU, calibrate activation ranges, quantize
weights per channel (symmetric int8, or int4 values for W4A8), optional bias correction, convert.

The result simulates integer inference in PyTorch (fake-quant) and exports a QDQ ONNX graph with int8 weight
initializers that ONNX Runtime runs on integer kernels.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pydantic
import torch
from torch import nn

from shrink._parametrize import bake_parametrizations
from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.data import forward_pre_hooks
from shrink.errors import ConfigError
from shrink.quant.algorithms.calibrate import LayerObservers, calibrating, run_calibration
from shrink.quant.algorithms.fold import fold_and_fuse
from shrink.quant.algorithms.gptq import input_hessians, round_with_gptq, sequential_gptq
from shrink.quant.algorithms.observers import make_observer
from shrink.quant.algorithms.smooth import smooth_layers
from shrink.quant.layers.convert import (
    check_weights,
    effective_weight_bits,
    quantized_layer,
    selected_layers,
    set_module,
)
from shrink.quant.layers.modules import ActMode, QuantConv2d, QuantLinear, act_qparams_u8
from shrink.quant.layers.packed import PackedEmbedding
from shrink.quant.numerics.qparams import QParams
from shrink.quant.onnx.export import attach_export
from shrink.select import Selector

__all__ = ["Int8Static", "quantize_static", "correct_bias"]

ObserverName = Literal["minmax", "moving_average", "percentile", "mse", "entropy", "aciq_laplace", "aciq_gaussian"]


@register("int8_static", family="quantize")
class Int8Static(Config):
    """Static PTQ: calibrated asymmetric u8 activations, per-channel symmetric weights (8 bits, or 4 → W4A8)."""

    observer: ObserverName = "percentile"
    #: with observer 'percentile': activation ranges clip at this percentile (and at 100 - it below)
    percentile: float = pydantic.Field(99.99, gt=50.0, le=100.0)
    weight_bits: int = pydantic.Field(8, ge=2, le=8)
    weight_observer: Literal["minmax", "mse", "aciq_laplace", "aciq_gaussian"] = "minmax"
    #: "gptq": Linear weights rounded with GPTQ error feedback on calibration inputs (same grid, lower output error)
    weight_rounding: Literal["nearest", "gptq"] = "nearest"
    #: GPTQ Hessians layer by layer from the already-quantized layers' outputs (False: one pass over the float model)
    gptq_sequential: bool = False
    activation_bits: int = pydantic.Field(8, ge=2, le=8)
    #: "auto": on x86 CPUs without VNNI, ONNX weights are stored as uint8 + 128 (see convert.effective_weight_bits)
    weight_range: Literal["auto", "full", "reduced", "u8"] = "auto"
    per_channel: bool = True
    #: subtract from each bias the mean output shift weight rounding causes on calibration data
    bias_correction: bool = False
    #: also calibrate and quantize each static layer's output (False: outputs stay float)
    quantize_outputs: bool = True
    #: SmoothQuant migration strength alpha for Linear layers (None: off; "auto": searched per input on the
    #: calibration data, see shrink.quant.algorithms.smooth)
    smooth: Annotated[float, pydantic.Field(ge=0.0, le=1.0)] | Literal["auto"] | None = None
    #: layers whose input is quantized per batch at run time instead of with calibrated ranges
    dynamic: Selector | None = None
    #: range of a dynamic layer's input: one per batch tensor, or one per token (row), computed at run time
    dynamic_granularity: Literal["tensor", "token"] = "tensor"
    selector: Selector = Selector()
    calibration_batches: int | None = pydantic.Field(None, ge=1)
    #: int8 embedding tables: one scale per this many columns of a row (None: one scale per row)
    embedding_group_size: int | None = pydantic.Field(None, ge=1)


def _weight_qparams(weight: torch.Tensor, config: Int8Static, name: str, bits: int):  # noqa: ANN202
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


def _split_embeddings(
    chosen: dict[str, nn.Module], config: Int8Static
) -> tuple[dict[str, nn.Embedding], dict[str, nn.Module]]:
    """The selected embedding tables (their group size checked before any calibration work) and the other layers."""
    embeddings = {n: m for n, m in chosen.items() if isinstance(m, nn.Embedding)}
    for name, emb in embeddings.items():
        group = config.embedding_group_size or emb.embedding_dim
        if emb.embedding_dim % group:
            raise ConfigError(
                f"int8_static.embedding_group_size: {group} does not divide the width {emb.embedding_dim} of {name!r}"
            )
    return embeddings, {n: m for n, m in chosen.items() if n not in embeddings}


def _calibrate(
    model: nn.Module,
    layers: dict[str, nn.Module],
    dynamic: set[str],
    relu_layers: set[str],
    config: Int8Static,
    ctx: Context,
) -> tuple[dict[str, torch.Tensor], list[Any], dict[str, Any], int]:
    """SmoothQuant (when asked; its input hooks stay until conversion), then activation ranges of the static layers.
    Returns the smoothing inverses, their hooks, the observers and the number of calibration batches."""
    inverse, smooth_hooks = (
        smooth_layers(
            model,
            layers,
            ctx.calibration,
            config.smooth,
            config.calibration_batches,
            per_token=dynamic if config.dynamic_granularity == "token" else (),
        )
        if config.smooth is not None
        else ({}, [])
    )
    static_layers = {n: m for n, m in layers.items() if n not in dynamic}  # dynamic layers need no observers
    with calibrating(
        model, static_layers, _act_observer(config), observe_outputs=config.quantize_outputs, relu_layers=relu_layers
    ) as observers:
        relu_hooks = [
            layers[n].register_forward_hook(lambda m, a, out: nn.functional.relu(out))
            for n in relu_layers
            if n in dynamic
        ]  # fused ReLUs of dynamic layers still apply
        try:
            batches = run_calibration(model, ctx.calibration, config.calibration_batches)
        finally:
            for h in relu_hooks:
                h.remove()
    return inverse, smooth_hooks, observers, batches


def _convert(
    model: nn.Module,
    layers: dict[str, nn.Module],
    dynamic: set[str],
    relu_layers: set[str],
    observers: dict[str, LayerObservers],
    inverse: dict[str, torch.Tensor],
    config: Int8Static,
    notes: list[str],
) -> tuple[dict[str, torch.Tensor], dict[str, QParams]]:
    """Swap each layer for its quantized version (round-to-nearest codes); returns the float weights (smoothed
    where SmoothQuant ran) and the weight grids, which GPTQ and bias correction start from."""
    float_weights, grids = {}, {}
    wbits, u8, range_note = effective_weight_bits(config.weight_bits, config.weight_range)
    if range_note:
        notes.append(f"int8_static: {range_note}")
    dyn_mode: ActMode = "dynamic_token" if config.dynamic_granularity == "token" else "dynamic"
    for name, layer in layers.items():
        assert isinstance(layer, (nn.Linear, nn.Conv2d))  # selected_layers admitted these and nn.Embedding (split off)
        mode: ActMode = dyn_mode if name in dynamic else "static"
        q = quantized_layer(layer, wbits, mode, config.activation_bits, name in relu_layers)
        qp = _weight_qparams(layer.weight.detach(), config, name, wbits)
        q.set_weight(layer.weight.detach(), qp)
        if mode == "static":
            q.set_input_qparams(act_qparams_u8(*observers[name].input.bounds(), bits=config.activation_bits))
            out_obs = observers[name].output
            if out_obs is not None:
                q.set_output_qparams(act_qparams_u8(*out_obs.bounds(), bits=config.activation_bits))
        if name in inverse:
            q.input_smooth = inverse[name]
        float_weights[name], grids[name] = layer.weight.detach().clone(), qp
        q.onnx_u8_weights = u8
        set_module(model, name, q)
    return float_weights, grids


def quantize_static(model: nn.Module, config: Int8Static, ctx: Context) -> nn.Module:
    """Fold, calibrate, quantize and convert ``model`` (in place; ``apply`` hands us a copy)."""
    bake_parametrizations(model)  # pruning masks etc. become plain weights (our copy)
    check_weights(model)
    relu_layers, notes = fold_and_fuse(model)
    chosen = selected_layers(model, config.selector, "int8_static.selector", (nn.Linear, nn.Conv2d, nn.Embedding))
    embeddings, layers = _split_embeddings(chosen, config)
    dynamic = set(selected_layers(model, config.dynamic, "int8_static.dynamic")) if config.dynamic else set()
    inverse, smooth_hooks, observers, batches = _calibrate(model, layers, dynamic, relu_layers, config, ctx)
    hessians = (  # one pass over the float model (smoothed inputs: SmoothQuant's hooks are still on)
        input_hessians(
            model,
            {n: m for n, m in layers.items() if isinstance(m, nn.Linear)},
            ctx.calibration,
            config.calibration_batches,
        )
        if config.weight_rounding == "gptq" and not config.gptq_sequential
        else {}
    )
    float_weights, grids = _convert(model, layers, dynamic, relu_layers, observers, inverse, config, notes)
    for h in smooth_hooks:
        h.remove()
    for name, emb in embeddings.items():  # weight-only int8, scales per row or group: Gather -> Cast -> Mul in ONNX
        set_module(model, name, PackedEmbedding.from_float(emb, 8, config.embedding_group_size or emb.embedding_dim))
    if embeddings:
        per = f"per {config.embedding_group_size} columns" if config.embedding_group_size else "per row"
        notes.append(f"int8_static: {len(embeddings)} embedding tables stored as int8 with one scale {per}")
    gptq_layers = {n: model.get_submodule(n) for n, m in layers.items() if isinstance(m, nn.Linear)}
    passes = 0
    if config.weight_rounding == "gptq" and gptq_layers:  # every layer (embeddings too) is quantized by now
        calib, limit = ctx.calibration, config.calibration_batches
        if config.gptq_sequential:
            passes = sequential_gptq(model, gptq_layers, float_weights, grids, calib, limit)
        else:
            round_with_gptq(gptq_layers, float_weights, grids, hessians)
            passes = 1
    if config.bias_correction:
        correct_bias(model, float_weights, ctx.calibration, config.calibration_batches)
    notes.append(
        f"int8_static: {len(layers)} layers quantized (W{config.weight_bits}A{config.activation_bits}, observer "
        f"{config.observer}, weights {'per-channel' if config.per_channel else 'per-tensor'} "
        f"{config.weight_observer}), {len(dynamic)} with dynamic activations, calibrated on {batches} batches"
        + (", bias corrected" if config.bias_correction else "")
        + (f", GPTQ rounding on {len(gptq_layers)} Linears ({passes} calibration passes)" if passes else "")
        + (f", SmoothQuant alpha={config.smooth} on {len(inverse)} Linear layers" if inverse else "")
    )
    notes.append("int8_static: PyTorch figures are simulated (fake-quant); the ONNX export runs integer kernels")
    ctx.notes.extend(notes)
    return attach_export(model)


implements(Int8Static)(quantize_static)
