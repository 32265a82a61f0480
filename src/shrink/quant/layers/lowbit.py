"""Layers whose weights are stored below fp32, as mixed precision (:func:`shrink.autosearch.apply_policy`) applies them:
:class:`LowBitLinear` and :class:`LowBitConv` (1-D and 2-D convolutions).

* **2-8 bits**: integer codes on a symmetric per-output-channel grid (an int8 buffer in memory) and one fp32 scale
  per output channel; :func:`shrink.save` writes the codes at ``bits`` bits each, bit-packed (as mask + packed
  non-zero codes when that is smaller; :mod:`shrink.export.codes`). Optionally the input's 8-bit asymmetric grid
  (fp32 scale, int32 zero point) from calibration: the layer fake-quantizes its input on it (W{bits}A8).
* **16 bits**: the weight in fp16 (half), no scale, float inputs.
* the bias stays fp32.

Compute is float: the weight is dequantized to fp32 and a float linear / convolution runs, so PyTorch figures are a
simulation of the integer arithmetic (the ``shrink_execution`` label says so). Real int8 kernels come from the ONNX
export in :mod:`shrink.autosearch.export`, which exports each layer's float twin (:meth:`to_float`).

:func:`stored_bytes` is what a layer takes in the file, computed without writing it: byte budgets use it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shrink.errors import ConfigError, UnsupportedOpError
from shrink.export.artifact import SPARSE_MIN_NUMEL, SPARSE_MIN_ZERO_FRACTION, register_layer
from shrink.export.codes import code_stream_bytes
from shrink.quant.numerics.qparams import QParams, fake_quantize, qparams_for_tensor, quantize

__all__ = ["LowBitLinear", "LowBitConv", "lowbit_layer", "stored_bytes", "LOWBIT_BITS", "INPUT_QPARAM_BYTES"]

#: weight widths a low-bit layer stores: integer codes of 2-8 bits, or fp16
LOWBIT_BITS = (2, 3, 4, 5, 6, 7, 8, 16)
#: the input grid in the file: an fp32 scale and an int32 zero point
INPUT_QPARAM_BYTES = 8
_SCALE_BYTES = 4  # one fp32 scale per output channel
_BIAS_BYTES = 4  # the fp32 bias, per output channel


class _LowBit(nn.Module):
    """Shared storage and arithmetic; see the module docstring."""

    weight_int: torch.Tensor | None
    weight_scale: torch.Tensor | None
    weight_half: torch.Tensor | None
    input_scale: torch.Tensor | None
    input_zero_point: torch.Tensor | None
    bias: nn.Parameter | None

    def _init_storage(self, shape: tuple[int, ...], bias: bool, bits: int, input_bits: int | None) -> None:
        if bits not in LOWBIT_BITS:
            raise ConfigError(f"{type(self).__name__}: bits must be one of {LOWBIT_BITS}, got {bits!r}")
        if input_bits is not None and (bits > 8 or input_bits != 8):
            raise ConfigError(f"{type(self).__name__}: input quantization is 8-bit, for 2-8-bit weights only")
        self.bits, self.input_bits, self.weight_shape = bits, input_bits, shape
        integer = bits <= 8
        self.register_buffer("weight_int", torch.zeros(shape, dtype=torch.int8) if integer else None)
        self.register_buffer("weight_scale", torch.ones(shape[0]) if integer else None)
        self.register_buffer("weight_half", None if integer else torch.zeros(shape, dtype=torch.float16))
        self.register_buffer("input_scale", torch.ones(()) if input_bits else None)
        self.register_buffer("input_zero_point", torch.zeros((), dtype=torch.int32) if input_bits else None)
        self.bias = nn.Parameter(torch.zeros(shape[0])) if bias else None

    @torch.no_grad()
    def set_weight(self, weight: torch.Tensor) -> None:
        """Store ``weight`` on the layer's grid (per-output-channel symmetric codes, or fp16)."""
        if self.weight_half is not None:
            self.weight_half.copy_(weight.half())
            return
        assert self.weight_int is not None and self.weight_scale is not None
        qp = qparams_for_tensor(weight.detach(), self.bits, symmetric=True, axis=0)
        self.weight_int.copy_(quantize(weight.detach(), qp))
        self.weight_scale.copy_(qp.scale.reshape(-1))

    @torch.no_grad()
    def set_input_qparams(self, qp: QParams) -> None:
        """The input's grid: per tensor, unsigned ``input_bits``, from :func:`shrink.autosearch.calibrate_inputs`."""
        if self.input_scale is None or self.input_zero_point is None:
            raise ConfigError(f"{type(self).__name__} was built without input quantization (input_bits=None)")
        if qp.bits != self.input_bits or qp.signed or qp.narrow_range or qp.scale.numel() != 1:
            raise ConfigError(f"input grid must be per-tensor unsigned {self.input_bits}-bit, got {qp}")
        self.input_scale.copy_(qp.scale.reshape(()))
        self.input_zero_point.copy_(qp.zero_point.reshape(()))

    def dequantized_weight(self) -> torch.Tensor:
        """The fp32 weight the layer computes with (the codes times their channel's scale, or the fp16 weight)."""
        if self.weight_half is not None:
            return self.weight_half.float()
        assert self.weight_int is not None and self.weight_scale is not None
        return self.weight_int.float() * self.weight_scale.reshape([-1] + [1] * (self.weight_int.dim() - 1))

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized fp32 weight (read-only: set it with :meth:`set_weight`)."""
        return self.dequantized_weight()

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale is None or self.input_zero_point is None:
            return x
        return fake_quantize(x, QParams(self.input_scale, self.input_zero_point, 8, signed=False))

    def shrink_code_bits(self) -> dict[str, int]:
        return {"weight_int": self.bits} if self.weight_int is not None else {}

    def shrink_param_count(self) -> tuple[int, int]:
        w = self.weight_int if self.weight_int is not None else self.weight_half
        assert w is not None
        n, nz = w.numel(), int(torch.count_nonzero(w))
        if self.bias is not None:
            n, nz = n + self.bias.numel(), nz + int(torch.count_nonzero(self.bias))
        return n, nz

    def _float_twin(self, layer: nn.Module) -> nn.Module:
        """``layer`` (a fresh float layer of the same shape) holding the dequantized weight and the bias."""
        with torch.no_grad():
            layer.weight.copy_(self.dequantized_weight())  # type: ignore[operator]
            if self.bias is not None:
                layer.bias.copy_(self.bias)  # type: ignore[union-attr, operator]
        return layer


@register_layer
class LowBitLinear(_LowBit):
    """Linear with its weight stored at ``bits`` (2-8: integer codes + per-channel scales; 16: fp16)."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, bits: int = 4, input_bits: int | None = None
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_storage((out_features, in_features), bias, bits, input_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._input(x), self.dequantized_weight(), self.bias)

    def to_float(self) -> nn.Linear:
        """An ``nn.Linear`` with the dequantized weight (no input quantization)."""
        out = nn.Linear(self.in_features, self.out_features, self.bias is not None)
        return self._float_twin(out)  # type: ignore[return-value]

    def shrink_manifest(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
            "bits": self.bits,
            "input_bits": self.input_bits,
        }

    @classmethod
    def shrink_from_manifest(cls, args: dict[str, Any]) -> LowBitLinear:
        return cls(**args)


@register_layer
class LowBitConv(_LowBit):
    """Conv1d / Conv2d (``dims``) with zero padding and its weight stored at ``bits`` (see :class:`LowBitLinear`)."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...] | str,
        dilation: tuple[int, ...],
        groups: int,
        bias: bool = True,
        bits: int = 4,
        input_bits: int | None = None,
    ) -> None:
        super().__init__()
        if dims not in (1, 2):
            raise ConfigError(f"LowBitConv: dims must be 1 or 2, got {dims!r}")
        self.dims, self.in_channels, self.out_channels, self.groups = dims, in_channels, out_channels, groups
        self.kernel_size, self.stride, self.dilation = tuple(kernel_size), tuple(stride), tuple(dilation)
        self.padding = padding if isinstance(padding, str) else tuple(padding)
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self._init_storage(shape, bias, bits, input_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = F.conv1d if self.dims == 1 else F.conv2d
        w = self.dequantized_weight()
        return conv(self._input(x), w, self.bias, self.stride, self.padding, self.dilation, self.groups)  # type: ignore[arg-type]

    def to_float(self) -> nn.Conv1d | nn.Conv2d:
        """The float convolution with the dequantized weight (no input quantization)."""
        cls = nn.Conv1d if self.dims == 1 else nn.Conv2d
        out = cls(
            self.in_channels,
            self.out_channels,
            self.kernel_size,  # type: ignore[arg-type]
            stride=self.stride,  # type: ignore[arg-type]
            padding=self.padding,  # type: ignore[arg-type]
            dilation=self.dilation,  # type: ignore[arg-type]
            groups=self.groups,
            bias=self.bias is not None,
        )
        return self._float_twin(out)  # type: ignore[return-value]

    def shrink_manifest(self) -> dict[str, Any]:
        return {
            "dims": self.dims,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
            "bias": self.bias is not None,
            "bits": self.bits,
            "input_bits": self.input_bits,
        }

    @classmethod
    def shrink_from_manifest(cls, args: dict[str, Any]) -> LowBitConv:
        return cls(**args)


def lowbit_layer(layer: nn.Module, weight: torch.Tensor, bits: int, input_qp: QParams | None = None) -> _LowBit:
    """The low-bit twin of a float ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` holding ``weight`` (e.g. pruned)
    at ``bits``, its bias, and the input grid ``input_qp`` (8-bit, for 2-8-bit weights) if given."""
    input_bits = input_qp.bits if input_qp is not None else None
    has_bias = getattr(layer, "bias", None) is not None
    q: _LowBit
    if type(layer) is nn.Linear:
        q = LowBitLinear(layer.in_features, layer.out_features, has_bias, bits, input_bits)
    elif type(layer) in (nn.Conv1d, nn.Conv2d):
        assert isinstance(layer, (nn.Conv1d, nn.Conv2d))
        if layer.padding_mode != "zeros":
            raise UnsupportedOpError(
                f"low-bit conv supports zero padding only, got padding_mode={layer.padding_mode!r}"
            )
        q = LowBitConv(
            1 if isinstance(layer, nn.Conv1d) else 2,
            layer.in_channels,
            layer.out_channels,
            tuple(layer.kernel_size),
            tuple(layer.stride),
            layer.padding if isinstance(layer.padding, str) else tuple(layer.padding),
            tuple(layer.dilation),
            layer.groups,
            has_bias,
            bits,
            input_bits,
        )
    else:
        raise UnsupportedOpError(
            f"cannot store a {type(layer).__name__} at {bits} bits (supported: Linear, Conv1d, Conv2d)"
        )
    q.set_weight(weight)
    if input_qp is not None:
        q.set_input_qparams(input_qp)
    if has_bias:
        assert q.bias is not None
        with torch.no_grad():
            q.bias.copy_(layer.bias.detach())  # type: ignore[union-attr]
    return q


def stored_bytes(
    weight_count: int, out_channels: int, bias: bool, bits: int, sparsity: float = 0.0, quantized_input: bool = False
) -> int:
    """Bytes :func:`shrink.save` writes for one layer's tensors at ``bits`` (32: a float layer) with ``sparsity`` of
    its weights pruned (``round(sparsity * weight_count)`` zeros, as magnitude pruning makes): codes / weights,
    scales, bias and input grid. Zeros that quantization adds can only make the file smaller."""
    zeros = round(sparsity * weight_count)
    total = _BIAS_BYTES * out_channels if bias else 0
    if bits <= 8:
        total += code_stream_bytes(weight_count, weight_count - zeros, bits) + _SCALE_BYTES * out_channels
        return total + (INPUT_QPARAM_BYTES if quantized_input else 0)
    width = 2 if bits == 16 else 4  # fp16 or fp32 values, sparse as shrink.save stores float tensors
    if weight_count >= SPARSE_MIN_NUMEL and zeros >= SPARSE_MIN_ZERO_FRACTION * weight_count:
        return total + (weight_count + 7) // 8 + (weight_count - zeros) * width
    return total + weight_count * width
