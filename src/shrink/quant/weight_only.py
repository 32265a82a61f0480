"""Weight-only quantization (``weight_only``: int8 / int4 with group-wise scales, packed) and float casting
(``float_cast``: fp16 / bf16). Compute stays in floating point; the gain is memory and file size.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from shrink._parametrize import bake_parametrizations
from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.quant.algorithms.group_rounding import rtn_codes
from shrink.quant.algorithms.weight_rounding import Rounded, learned_codes
from shrink.quant.layers.convert import check_weights, selected_layers, set_module
from shrink.quant.layers.packed import SCALE_DTYPE, PackedEmbedding, PackedLinear
from shrink.select import Selector

__all__ = ["WeightOnly", "FloatCast", "weight_only", "float_cast"]


@register("weight_only", family="quantize")
class WeightOnly(Config):
    """Packed int8 / int4 weights with one fp16 scale per ``group_size`` inputs (Linear and Embedding).

    ``weight_rounding="gptq"`` rounds Linear weights with GPTQ error feedback and ``activation_aware=True`` scales
    their input channels first (AWQ); both learn from the calibration data only. Embedding tables are rounded to
    nearest. PyTorch computes in float on the dequantized weights; the ONNX export runs int4 Linears on ONNX
    Runtime's ``MatMulNBits`` kernels with ``onnx_compute`` arithmetic ("int8": activations quantized per block at
    run time, integer dot products; "float": float dot products).
    """

    #: bits per stored weight code (int4 packs two codes per byte)
    bits: Literal[4, 8] = 4
    group_size: Literal[32, 64, 128] = 32
    #: how Linear weights are rounded: 'nearest', or 'gptq' error feedback on calibration inputs
    weight_rounding: Literal["nearest", "gptq"] = "nearest"
    #: AWQ: scale Linear input channels by calibration activation sizes before rounding
    activation_aware: bool = False
    #: int4 ONNX MatMulNBits math: 'int8' activations quantized per block at run time, 'float' float dots
    onnx_compute: Literal["float", "int8"] = "int8"
    selector: Selector = Selector(types=("Linear", "Embedding"))


@implements(WeightOnly)
def weight_only(model: nn.Module, config: WeightOnly, ctx: Context) -> nn.Module:
    bake_parametrizations(model)  # pruning masks etc. become plain weights (our copy)
    check_weights(model)
    layers = selected_layers(model, config.selector, "weight_only.selector", (nn.Linear, nn.Embedding))
    for name, layer in layers.items():
        dim = int(layer.in_features if isinstance(layer, nn.Linear) else layer.embedding_dim)  # type: ignore[arg-type]
        if dim % config.group_size:
            raise_group(name, dim, config.group_size)
    linears = {n: m for n, m in layers.items() if isinstance(m, nn.Linear)}
    rounded = learned_codes(model, linears, config, ctx) if _learns(config) else {}
    for name, layer in layers.items():
        set_module(model, name, _packed(layer, config, rounded.get(name)))
    how = _method(config)
    ctx.notes.append(
        f"weight_only: {len(layers)} layers stored as packed int{config.bits}, group {config.group_size} ({how}); "
        "PyTorch computes in float on dequantized weights"
        + (f"; ONNX: int4 Linears on MatMulNBits ({config.onnx_compute} arithmetic)" if config.bits == 4 else "")
    )
    setattr(model, "shrink_execution", f"int{config.bits} weight-only (packed storage, float compute)")  # noqa: B010  (nn.Module types attributes as Tensor | Module)
    return model


def _learns(config: WeightOnly) -> bool:
    return config.weight_rounding == "gptq" or config.activation_aware


def _method(config: WeightOnly) -> str:
    parts = (["AWQ input scaling"] if config.activation_aware else []) + [
        "GPTQ rounding" if config.weight_rounding == "gptq" else "rounded to nearest"
    ]
    return " + ".join(parts)


def _packed(layer: nn.Module, config: WeightOnly, learned: Rounded | None) -> nn.Module:
    if isinstance(layer, nn.Embedding):
        table = PackedEmbedding(
            layer.num_embeddings, layer.embedding_dim, config.bits, config.group_size, layer.padding_idx
        )
        table.packed.set_codes(*rtn_codes(layer.weight.detach(), config.bits, config.group_size, SCALE_DTYPE))
        return table
    assert isinstance(layer, nn.Linear)  # selected_layers admitted only Linear and Embedding
    scaled = learned is not None and learned.input_scale is not None
    q = PackedLinear(
        layer.in_features,
        layer.out_features,
        layer.bias is not None,
        config.bits,
        config.group_size,
        input_scaled=scaled,
        onnx_compute=config.onnx_compute,
    )
    codes, scales = (
        (learned.codes, learned.scales)
        if learned is not None
        else rtn_codes(layer.weight.detach(), config.bits, config.group_size, SCALE_DTYPE)
    )
    q.packed.set_codes(codes, scales)
    if scaled:
        assert q.input_scale is not None and learned is not None and learned.input_scale is not None
        q.input_scale.copy_(learned.input_scale)
    if layer.bias is not None:
        assert q.bias is not None  # built with a bias just above
        q.bias.data.copy_(layer.bias.detach())
    return q


def raise_group(name: str, dim: int, group: int) -> None:
    from shrink.errors import ConfigError

    raise ConfigError(
        f"weight_only: layer {name!r} has input dim {dim}, not divisible by group_size {group}; "
        "choose another group_size or add the layer to selector.ignore"
    )


@register("float_cast", family="quantize")
class FloatCast(Config):
    """Cast parameters and buffers to fp16 or bf16; inputs are cast on the way in and outputs back to fp32."""

    #: floating-point type the parameters and buffers are cast to
    dtype: Literal["float16", "bfloat16"] = "float16"


def _cast_tree(x: Any, dtype: torch.dtype) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(dtype) if x.is_floating_point() else x
    if isinstance(x, dict):
        return {k: _cast_tree(v, dtype) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_cast_tree(v, dtype) for v in x)
    return x


class _CastInputs:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return _cast_tree(args, self.dtype), _cast_tree(kwargs, self.dtype)


def _output_to_fp32(module: nn.Module, args: tuple, out: Any) -> Any:
    return _cast_tree(out, torch.float32)


@implements(FloatCast)
def float_cast(model: nn.Module, config: FloatCast, ctx: Context) -> nn.Module:
    dtype = getattr(torch, config.dtype)
    model = model.to(dtype)
    model.register_forward_pre_hook(_CastInputs(dtype), with_kwargs=True)
    model.register_forward_hook(_output_to_fp32)
    setattr(model, "shrink_execution", f"{config.dtype} (real, PyTorch eager)")  # noqa: B010  (nn.Module types attributes as Tensor | Module)
    ctx.notes.append(f"float_cast: all floating parameters and buffers cast to {config.dtype}")
    return model
