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
from shrink.quant.convert import check_weights, selected_layers, set_module
from shrink.quant.packed import PackedEmbedding, PackedLinear
from shrink.select import Selector

__all__ = ["WeightOnly", "FloatCast", "weight_only", "float_cast"]


@register("weight_only", family="quantize")
class WeightOnly(Config):
    """Packed int8 / int4 weights with one fp16 scale per ``group_size`` inputs (Linear and Embedding)."""

    bits: Literal[4, 8] = 4
    group_size: Literal[32, 64, 128] = 32
    selector: Selector = Selector(types=("Linear", "Embedding"))


@implements(WeightOnly)
def weight_only(model: nn.Module, config: WeightOnly, ctx: Context) -> nn.Module:
    bake_parametrizations(model)  # pruning masks etc. become plain weights (our copy)
    check_weights(model)
    layers = selected_layers(model, config.selector, "weight_only.selector", (nn.Linear, nn.Embedding))
    for name, layer in layers.items():
        assert isinstance(layer, (nn.Linear, nn.Embedding))  # selected_layers admitted only these types
        dim = layer.in_features if isinstance(layer, nn.Linear) else layer.embedding_dim
        if dim % config.group_size:
            raise_group(name, dim, config.group_size)
        packed = (
            PackedLinear.from_float(layer, config.bits, config.group_size)
            if isinstance(layer, nn.Linear)
            else PackedEmbedding.from_float(layer, config.bits, config.group_size)
        )
        set_module(model, name, packed)
    ctx.notes.append(
        f"weight_only: {len(layers)} layers stored as packed int{config.bits}, group {config.group_size}; "
        "compute is float on dequantized weights (PyTorch eager)"
    )
    setattr(model, "shrink_execution", f"int{config.bits} weight-only (packed storage, float compute)")  # noqa: B010  (nn.Module types attributes as Tensor | Module)
    return model


def raise_group(name: str, dim: int, group: int) -> None:
    from shrink.errors import ConfigError

    raise ConfigError(
        f"weight_only: layer {name!r} has input dim {dim}, not divisible by group_size {group}; "
        "choose another group_size or add the layer to selector.ignore"
    )


@register("float_cast", family="quantize")
class FloatCast(Config):
    """Cast parameters and buffers to fp16 or bf16; inputs are cast on the way in and outputs back to fp32."""

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
