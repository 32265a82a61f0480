"""Shared conversion helpers: weight checks, layer selection with supported types, float → quantized layers."""

from __future__ import annotations

import functools
import os

import torch
from torch import nn
from torch.nn.utils import parametrize

from shrink.errors import ConfigError, ModelError, UnsupportedOpError
from shrink.quant.layers.modules import ActMode, QuantConv2d, QuantLinear
from shrink.select import Selector, select_modules

__all__ = ["check_weights", "selected_layers", "quantized_layer", "pair", "set_module"]

SUPPORTED = (nn.Linear, nn.Conv2d)


def check_weights(model: nn.Module) -> None:
    """Raise ModelError naming the first parameter or buffer holding NaN or Inf."""
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ModelError(f"{name}: contains NaN or Inf; quantization needs finite weights")


def selected_layers(
    model: nn.Module, selector: Selector | None, where: str, supported: tuple[type[nn.Module], ...] = SUPPORTED
) -> dict[str, nn.Module]:
    """Layers chosen by ``selector``; a chosen layer of an unsupported type is an error naming it. A parametrized
    layer (pruning masks) counts as the layer class it parametrizes."""
    layers = select_modules(model, selector, where)
    for name, mod in layers.items():
        cls = type(mod).__bases__[0] if parametrize.is_parametrized(mod) else type(mod)
        if cls not in supported:
            raise UnsupportedOpError(
                f"{where}: layer {name!r} is a {cls.__name__}, which this quantizer does not support "
                f"(supported: {', '.join(t.__name__ for t in supported)}); add it to 'ignore'"
            )
    return layers


def check_group(stage: str, name: str, inputs: int, group: int | None) -> None:
    """A group-wise grid of ``group`` inputs per scale must tile the layer's ``inputs``; None (per row) always does."""
    if group is not None and inputs % group:
        fitting = [str(g) for g in (32, 64, 128) if inputs % g == 0]  # the sizes the group_size fields accept
        choices = f"group_size {' or '.join(fitting)}, or None" if fitting else "group_size None"
        raise ConfigError(
            f"{stage}: layer {name!r} has {inputs} inputs, not divisible by group_size {group}; choose {choices} "
            "(one scale per row), or add the layer to selector.ignore"
        )


def pair(value: tuple[int, ...], what: str) -> tuple[int, int]:
    """A Conv2d geometry tuple (kernel_size, stride, ...) as the ``(h, w)`` pair it is; torch types it loosely."""
    if len(value) != 2:
        raise UnsupportedOpError(f"{what} should have 2 entries (Conv2d), got {value!r}")
    return value[0], value[1]


def quantized_layer(
    layer: nn.Module, weight_bits: int, act_mode: ActMode, act_bits: int = 8, relu: bool = False
) -> QuantLinear | QuantConv2d:
    """An empty quantized twin of ``layer`` (weights and qparams are set by the caller); keeps the float bias and a
    smoothed Linear's ``input_smooth``."""
    if isinstance(layer, nn.Linear):
        smooth = getattr(layer, "input_smooth", None)  # a smooth_quant stage's input division stays in front
        q: QuantLinear | QuantConv2d = QuantLinear(
            layer.in_features, layer.out_features, layer.bias is not None, weight_bits, act_mode, act_bits, relu
        )
        if isinstance(smooth, torch.Tensor):
            q.input_smooth = smooth.detach().clone()
    elif isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise UnsupportedOpError(
                f"Conv2d with padding={layer.padding!r}, padding_mode={layer.padding_mode!r} "
                "is not supported by the quantized conv"
            )
        q = QuantConv2d(
            layer.in_channels,
            layer.out_channels,
            pair(layer.kernel_size, "Conv2d.kernel_size"),
            pair(layer.stride, "Conv2d.stride"),
            pair(layer.padding, "Conv2d.padding"),
            pair(layer.dilation, "Conv2d.dilation"),
            layer.groups,
            layer.bias is not None,
            weight_bits,
            act_mode,
            act_bits,
            relu,
        )
    else:
        raise UnsupportedOpError(f"cannot quantize a {type(layer).__name__}")
    if layer.bias is not None:
        assert q.bias is not None  # built with bias=True just above
        q.bias.data.copy_(layer.bias.detach())
    return q


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule called ``name``."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


@functools.cache
def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has VNNI / AMX int8 dot products (no 16-bit saturation in u8 x s8 kernels); read once
    per process."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i686"):
        return True  # ARM / other kernels have no vpmaddubsw saturation
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


#: oneDNN ISA caps (``ONEDNN_MAX_CPU_ISA``) that leave out its VNNI / AMX int8 kernels
_ONEDNN_CAPS_WITHOUT_VNNI = frozenset({"SSE41", "AVX", "AVX2", "AVX512_CORE"})


def torch_int8_saturates() -> bool:
    """Whether PyTorch's x86 int8 kernels (oneDNN, FBGEMM) sum each pair of u8 x s8 products in 16 bits here
    (vpmaddubsw, which saturates at 32,767): on an x86 CPU without VNNI / AMX, or with oneDNN capped below them by
    the ``ONEDNN_MAX_CPU_ISA`` environment variable."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return not cpu_has_vnni() or cap in _ONEDNN_CAPS_WITHOUT_VNNI


def effective_weight_bits(bits: int, weight_range: str) -> tuple[int, bool, str | None]:
    """How 8-bit weights avoid the saturation of ONNX Runtime's u8 x s8 kernels on x86 CPUs without VNNI (pairs of
    products summed in 16 bits by vpmaddubsw): ``"reduced"`` uses 7-bit codes, ``"u8"`` (and ``"auto"`` there)
    stores the same 8-bit codes as uint8 + 128 so ORT picks its u8 x u8 kernels. Returns (bits, u8 storage, note)."""
    if bits < 8 or weight_range == "full" or (weight_range == "auto" and cpu_has_vnni()):
        return bits, False, None
    if weight_range == "reduced":
        return 7, False, "weights use 7-bit codes (reduce range) so ONNX Runtime's u8 x s8 kernels cannot saturate"
    return (
        bits,
        True,
        (
            "ONNX weights stored as uint8 + 128 (u8 x u8 kernels): this CPU has no VNNI and ONNX "
            "Runtime's u8 x s8 kernels would saturate"
        ),
    )


__all__ += ["cpu_has_vnni", "torch_int8_saturates", "effective_weight_bits"]
