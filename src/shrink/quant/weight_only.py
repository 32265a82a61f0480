"""Weight-only quantization (``weight_only``: int8 / int4 with group-wise scales, packed) and float casting
(``float_cast``: fp16 / bf16). Compute stays in floating point; the gain is memory and file size.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic
import torch
from torch import nn

from shrink._float_cast import install_float_cast
from shrink._parametrize import bake_parametrizations
from shrink.api import Context, implements
from shrink.config import Config, refuse_moved_fields, register
from shrink.quant.algorithms.group_rounding import check_asymmetric, rtn_codes
from shrink.quant.layers.convert import check_group, check_weights, selected_layers, set_module
from shrink.quant.layers.packed import SCALE_DTYPE, PackedEmbedding, PackedLinear
from shrink.quant.layers.prepared import PreparedLinear, recorded_group_grid
from shrink.select import Selector

__all__ = ["WeightOnly", "FloatCast", "weight_only", "float_cast"]

#: fields that moved to stages of their own: name -> how to write it now
MOVED_FIELDS = {
    "weight_rounding": "list a gptq stage (same bits and group_size) before weight_only for GPTQ rounding",
    "activation_aware": "list an awq stage (same bits and group_size) before weight_only (and before gptq)",
}


@register("weight_only", family="quantize")
class WeightOnly(Config):
    """Packed int8 / int4 weights with one fp16 scale per ``group_size`` inputs, or per row (Linear and Embedding).

    Codes are rounded to nearest, or kept as an earlier ``gptq`` / ``signround`` stage rounded them (same ``bits``,
    ``group_size`` and ``asymmetric``); an earlier ``awq`` stage's input scaling is kept in front of the layer.
    ``asymmetric`` int4 Linears keep a zero point per group as well (Embedding tables stay symmetric). PyTorch computes
    in float on the dequantized weights; the ONNX export runs int4 Linears on ONNX Runtime's ``MatMulNBits`` kernels
    with ``onnx_compute`` arithmetic ("int8": activations quantized per block at run time, integer dot products;
    "float": float dot products).
    """

    #: bits per stored weight code (int4 packs two codes per byte)
    bits: Literal[4, 8] = 4
    #: inputs per fp16 scale; None: one scale per row (int4 ONNX export then needs a power-of-two row length)
    group_size: Literal[32, 64, 128] | None = 32
    #: int4 ONNX MatMulNBits math: 'int8' activations quantized per block at run time, 'float' float dots
    onnx_compute: Literal["float", "int8"] = "int8"
    #: int4 Linears: each group's range from its minimum to its maximum over all 16 levels, with a zero point per
    #: group (half a byte; ONNX Runtime's MatMulNBits and PyTorch's int4 kernels take them). Embedding tables stay
    #: symmetric
    asymmetric: bool = False
    selector: Selector = Selector(types=("Linear", "Embedding"))

    @pydantic.model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        refuse_moved_fields("weight_only", data, MOVED_FIELDS)
        return data

    @pydantic.model_validator(mode="after")
    def _zero_points_int4(self) -> WeightOnly:
        check_asymmetric(self.asymmetric, self.bits)
        return self


@implements(WeightOnly)
def weight_only(model: nn.Module, config: WeightOnly, ctx: Context) -> nn.Module:
    bake_parametrizations(model)  # pruning masks etc. become plain weights (our copy)
    check_weights(model)
    layers = selected_layers(model, config.selector, "weight_only.selector", (nn.Linear, PreparedLinear, nn.Embedding))
    for name, layer in layers.items():
        dim = int(layer.in_features if isinstance(layer, nn.Linear) else layer.embedding_dim)  # type: ignore[arg-type]
        check_group("weight_only", name, dim, config.group_size)
    for name, layer in layers.items():
        set_module(model, name, _packed(name, layer, config))
    prepared = sum(isinstance(m, PreparedLinear) and m.weight_scale is not None for m in layers.values())
    scaled = sum(isinstance(m, PreparedLinear) and m.input_smooth is not None for m in layers.values())
    group = "per row" if config.group_size is None else f"group {config.group_size}"
    group += ", asymmetric Linears (zero points)" if config.asymmetric else ""
    ctx.notes.append(
        f"weight_only: {len(layers)} layers stored as packed int{config.bits}, {group} ({prepared} with the codes of "
        f"a rounding stage, {scaled} with input scaling, the rest rounded to nearest); PyTorch computes in float on "
        "dequantized weights"
        + (f"; ONNX: int4 Linears on MatMulNBits ({config.onnx_compute} arithmetic)" if config.bits == 4 else "")
    )
    setattr(model, "shrink_execution", f"int{config.bits} weight-only (packed storage, float compute)")  # noqa: B010  (nn.Module types attributes as Tensor | Module)
    return model


def _codes(name: str, layer: nn.Linear, config: WeightOnly) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The layer's codes, scales and (asymmetric) zero points: those of an earlier rounding stage's grid, else
    rounded to nearest. A group grid's scales are already fp16 values; a per-channel grid's fp32 scales are stored
    in fp16 (relative change <= 2^-11, the codes stay the rounding stage's)."""
    group = config.group_size or layer.in_features
    weight = layer.weight.detach().float()
    where = f"weight_only: layer {name!r}"
    grid = recorded_group_grid(layer, config.bits, config.group_size, config.asymmetric, where)
    if grid is None:
        return rtn_codes(weight, config.bits, group, SCALE_DTYPE, asymmetric=config.asymmetric)
    scales, zeros = grid
    qmax = 2 ** (config.bits - 1) - 1
    shifted = torch.round(weight / scales.repeat_interleave(group, dim=1))
    if zeros is not None:
        shifted = shifted + zeros.repeat_interleave(group, dim=1)
    return torch.clamp(shifted, -qmax - 1, qmax).to(torch.int8), scales, zeros


def _packed(name: str, layer: nn.Module, config: WeightOnly) -> nn.Module:
    if isinstance(layer, nn.Embedding):
        dim = int(layer.embedding_dim)
        table = PackedEmbedding(layer.num_embeddings, dim, config.bits, config.group_size or dim, layer.padding_idx)
        table.packed.set_codes(
            *rtn_codes(layer.weight.detach(), config.bits, config.group_size or dim, SCALE_DTYPE)[:2]
        )
        return table
    assert isinstance(layer, nn.Linear)  # selected_layers admitted only Linear and Embedding
    smooth = layer.input_smooth if isinstance(layer, PreparedLinear) else None
    q = PackedLinear(
        layer.in_features,
        layer.out_features,
        layer.bias is not None,
        config.bits,
        config.group_size or layer.in_features,
        input_scaled=smooth is not None,
        onnx_compute=config.onnx_compute,
        asymmetric=config.asymmetric,
    )
    q.packed.set_codes(*_codes(name, layer, config))
    if smooth is not None:
        assert q.input_scale is not None  # built with input_scaled=True just above
        q.input_scale.copy_(smooth)
    if layer.bias is not None:
        assert q.bias is not None  # built with a bias just above
        q.bias.data.copy_(layer.bias.detach())
    return q


@register("float_cast", family="quantize")
class FloatCast(Config):
    """Cast parameters and buffers to fp16 or bf16; inputs are cast on the way in and outputs back to fp32."""

    #: floating-point type the parameters and buffers are cast to
    dtype: Literal["float16", "bfloat16"] = "float16"


@implements(FloatCast)
def float_cast(model: nn.Module, config: FloatCast, ctx: Context) -> nn.Module:
    model = install_float_cast(model, config.dtype)
    setattr(model, "shrink_execution", f"{config.dtype} (real, PyTorch eager)")  # noqa: B010  (nn.Module types attributes as Tensor | Module)
    ctx.notes.append(f"float_cast: all floating parameters and buffers cast to {config.dtype}")
    return model
