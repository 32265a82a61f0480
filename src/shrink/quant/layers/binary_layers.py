"""Binary layers (BNN, Courbariaux et al. 2016; XNOR-Net, Rastegari et al. 2016).

Training form (:class:`BinaryConv2d`, :class:`BinaryLinear`): latent float weights; the forward pass uses
``α · sign(W)`` with one ``α = mean|W|`` per output channel, and binarizes the layer's input to ±1 with a learned
per-channel threshold (``sign(x - b)``, as ReActNet's RSign: after a ReLU, a plain ``sign`` would be constant +1).
``sign`` passes gradients straight through where ``|x| ≤ 1`` and blocks them outside (the clipped identity).

Storage form (:class:`PackedBinaryConv2d`, :class:`PackedBinaryLinear`): the sign bits packed eight per byte
(``np.packbits``), the per-channel ``α`` and thresholds in fp32. ``shrink.save`` writes ~1/32 of the fp32 weight
bytes. Execution unpacks the bits to ±1 floats and runs a float convolution: the arithmetic equals an XNOR-popcount
kernel's, but it is simulated, not a bit-serial kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from shrink.export.artifact import register_layer

__all__ = [
    "sign_ste",
    "pack_signs",
    "unpack_signs",
    "BinaryConv2d",
    "BinaryLinear",
    "PackedBinaryConv2d",
    "PackedBinaryLinear",
]


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``x ≥ 0`` else ``-1``; the gradient is the clipped identity ``1{|x| ≤ 1}``."""
    return _SignSTE.apply(x)


def pack_signs(weight: torch.Tensor) -> torch.Tensor:
    """The sign bits of ``weight`` (1 for ``≥ 0``), flattened and packed eight per byte (uint8)."""
    bits = (weight.detach().reshape(-1) >= 0).cpu().numpy()
    return torch.from_numpy(np.packbits(bits))


def unpack_signs(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """±1 float32 tensor of ``shape`` from :func:`pack_signs`' bytes."""
    numel = int(np.prod(shape))
    if packed.dtype != torch.uint8 or packed.numel() != (numel + 7) // 8:
        raise ValueError(
            f"packed sign bits: expected {(numel + 7) // 8} uint8 bytes for shape {list(shape)}, "
            f"got {packed.numel()} of {packed.dtype}"
        )
    bits = np.unpackbits(packed.cpu().numpy(), count=numel).astype(np.float32)
    return torch.from_numpy(bits * 2 - 1).reshape(shape)


def _alpha(weight: torch.Tensor) -> torch.Tensor:
    return weight.abs().mean(dim=tuple(range(1, weight.dim())))


def binarize_at(x: torch.Tensor, threshold: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """``x - threshold`` with one threshold per channel of ``x`` along ``channel_dim`` (1 for a conv's input, -1
    for a Linear's, whatever its leading dimensions)."""
    if channel_dim == -1:
        return x - threshold
    return x - threshold.reshape([1, -1] + [1] * (x.dim() - 2))


class _BinaryMixin:
    """Shared parts of the training-form binary layers."""

    threshold: nn.Parameter
    binarize_input: bool
    #: the dimension of an input that holds its channels (one threshold each)
    channel_dim: int

    def _binary_weight(self) -> torch.Tensor:
        w = self.weight  # type: ignore[attr-defined]
        shape = [-1] + [1] * (w.dim() - 1)
        return sign_ste(w) * _alpha(w).reshape(shape)

    def _binary_input(self, x: torch.Tensor) -> torch.Tensor:
        if not self.binarize_input:
            return x
        return sign_ste(binarize_at(x, self.threshold, self.channel_dim))


class BinaryConv2d(nn.Conv2d, _BinaryMixin):
    """Conv2d with binarized weights (``α · sign(W)``) and optionally binarized inputs, for training."""

    channel_dim = 1

    def __init__(self, *args: Any, binarize_input: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.binarize_input = binarize_input
        self.threshold = nn.Parameter(torch.zeros(self.in_channels))

    @classmethod
    def from_float(cls, conv: nn.Conv2d, binarize_input: bool = True) -> BinaryConv2d:
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            binarize_input=binarize_input,
        )
        new.load_state_dict(conv.state_dict(), strict=False)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self._binary_input(x), self._binary_weight(), self.bias)


class BinaryLinear(nn.Linear, _BinaryMixin):
    """Linear with binarized weights (``α · sign(W)``) and optionally binarized inputs, for training."""

    channel_dim = -1

    def __init__(self, in_features: int, out_features: int, bias: bool = True, binarize_input: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.binarize_input = binarize_input
        self.threshold = nn.Parameter(torch.zeros(in_features))

    @classmethod
    def from_float(cls, linear: nn.Linear, binarize_input: bool = True) -> BinaryLinear:
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, binarize_input=binarize_input)
        new.load_state_dict(linear.state_dict(), strict=False)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._binary_input(x), self._binary_weight(), self.bias)


class _PackedBinary(nn.Module):
    """Sign bits packed eight per byte plus per-channel α and input thresholds; see the module docstring."""

    shrink_execution = "binary weights (1-bit packed), unpacked to ±1 floats: simulated XNOR arithmetic"
    packed: torch.Tensor
    alpha: torch.Tensor
    threshold: torch.Tensor
    bias: torch.Tensor | None

    channel_dim: int

    def __init__(
        self, weight_shape: tuple[int, ...], has_bias: bool, binarize_input: bool, in_channels: int | None = None
    ) -> None:
        super().__init__()
        self.weight_shape = tuple(int(s) for s in weight_shape)
        self.binarize_input = binarize_input
        numel = int(np.prod(self.weight_shape))
        self.register_buffer("packed", torch.zeros((numel + 7) // 8, dtype=torch.uint8))
        self.register_buffer("alpha", torch.ones(self.weight_shape[0]))
        # one input threshold per input channel (a grouped conv's weight holds in_channels / groups of them)
        self.register_buffer("threshold", torch.zeros(in_channels or self.weight_shape[1]))
        self.register_buffer("bias", torch.zeros(self.weight_shape[0]) if has_bias else None)

    def _load_from(self, layer: BinaryConv2d | BinaryLinear) -> None:
        with torch.no_grad():
            self.packed.copy_(pack_signs(layer.weight))
            self.alpha.copy_(_alpha(layer.weight.detach()))
            self.threshold.copy_(layer.threshold.detach())
            if self.bias is not None and layer.bias is not None:
                self.bias.copy_(layer.bias.detach())

    def dequantized_weight(self) -> torch.Tensor:
        """``α · sign(W)`` as fp32."""
        signs = unpack_signs(self.packed, self.weight_shape).to(self.alpha.device)
        return signs * self.alpha.reshape([-1] + [1] * (len(self.weight_shape) - 1))

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if not self.binarize_input:
            return x
        return torch.where(binarize_at(x, self.threshold, self.channel_dim) >= 0, 1.0, -1.0).to(x.dtype)

    def shrink_param_count(self) -> tuple[int, int]:
        numel = int(np.prod(self.weight_shape))
        extra = self.alpha.numel() + self.threshold.numel() + (self.bias.numel() if self.bias is not None else 0)
        return numel + extra, numel + extra


@register_layer
class PackedBinaryConv2d(_PackedBinary):
    """Binary Conv2d in 1-bit packed storage."""

    channel_dim = 1

    def __init__(
        self,
        weight_shape: tuple[int, ...],
        has_bias: bool,
        binarize_input: bool,
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        dilation: tuple[int, ...],
        groups: int,
    ) -> None:
        super().__init__(weight_shape, has_bias, binarize_input, int(weight_shape[1]) * groups)
        self.stride, self.padding, self.dilation, self.groups = tuple(stride), tuple(padding), tuple(dilation), groups

    @classmethod
    def from_binary(cls, conv: BinaryConv2d) -> PackedBinaryConv2d:
        if not isinstance(conv.padding, tuple) or conv.padding_mode != "zeros":
            raise ValueError(
                f"PackedBinaryConv2d supports numeric zero padding only, got {conv.padding!r} ({conv.padding_mode})"
            )
        new = cls(
            tuple(conv.weight.shape),
            conv.bias is not None,
            conv.binarize_input,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
        )
        new._load_from(conv)
        return new

    def shrink_manifest(self) -> dict[str, Any]:
        return {
            "weight_shape": list(self.weight_shape),
            "has_bias": self.bias is not None,
            "binarize_input": self.binarize_input,
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
        }

    @classmethod
    def shrink_from_manifest(cls, args: dict[str, Any]) -> PackedBinaryConv2d:
        return cls(
            tuple(args["weight_shape"]),
            bool(args["has_bias"]),
            bool(args["binarize_input"]),
            tuple(args["stride"]),
            tuple(args["padding"]),
            tuple(args["dilation"]),
            int(args["groups"]),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            self._input(x), self.dequantized_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups
        )


@register_layer
class PackedBinaryLinear(_PackedBinary):
    """Binary Linear in 1-bit packed storage."""

    channel_dim = -1

    @classmethod
    def from_binary(cls, linear: BinaryLinear) -> PackedBinaryLinear:
        new = cls(tuple(linear.weight.shape), linear.bias is not None, linear.binarize_input)
        new._load_from(linear)
        return new

    def shrink_manifest(self) -> dict[str, Any]:
        return {
            "weight_shape": list(self.weight_shape),
            "has_bias": self.bias is not None,
            "binarize_input": self.binarize_input,
        }

    @classmethod
    def shrink_from_manifest(cls, args: dict[str, Any]) -> PackedBinaryLinear:
        return cls(tuple(args["weight_shape"]), bool(args["has_bias"]), bool(args["binarize_input"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._input(x), self.dequantized_weight(), self.bias)
