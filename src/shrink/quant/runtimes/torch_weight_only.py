"""Weight-only int8 / int4 Linears on PyTorch's CPU integer-weight kernels, and the conversion of shrink's packed
weight-only layers onto them.

``torch.ops.aten._weight_int8pack_mm`` (int8 codes, one scale per output channel) and
``_weight_int4pack_mm_for_cpu`` (int4 codes packed two per byte, one scale per 32 / 64 / 128 / 256 inputs) multiply
by the packed codes directly: they de-quantize in registers, not into a float copy of the weight, which is what
memory-bound decoding needs. Activations enter the kernels in bfloat16 (the float32 variants of these kernels are
reference loops, many times slower), and so do the scales.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from shrink.errors import ConfigError, DataError, UnsupportedOpError
from shrink.quant.layers.convert import set_module
from shrink.quant.layers.packed import PackedLinear

__all__ = [
    "ACT_DTYPE",
    "DENSE_FROM_ROWS",
    "Int8WeightLinear",
    "Int4WeightLinear",
    "INT4_KERNEL_GROUPS",
    "to_torch_weight_only",
    "weight_only_kernels",
]

#: dtype of the activations (and scales) the packed-weight kernels read
ACT_DTYPE = torch.bfloat16
#: group sizes the int4 CPU kernel supports
INT4_KERNEL_GROUPS = (32, 64, 128, 256)
#: int8 weight-only inputs with at least this many rows run as one float GEMM (see :class:`Int8WeightLinear`)
DENSE_FROM_ROWS = 16


class _PackedLinear(nn.Module):
    bias: torch.Tensor | None
    input_scale: torch.Tensor | None
    #: inputs of at least this many rows (a prefill) multiply a float copy of the weight instead (None: never)
    dense_from_rows: int | None = None

    def __init__(self, in_features: int, out_features: int, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.register_buffer("input_scale", None)

    def scale_input(self, factors: torch.Tensor) -> None:
        """Multiply the input by ``factors`` (one per input channel) before the kernel (AWQ's ``1 / s``)."""
        if factors.shape != (self.in_features,):
            raise ConfigError(
                f"{type(self).__name__}: {tuple(factors.shape)} input factors, expected {self.in_features}"
            )
        self.input_scale = factors.detach().float().clone()

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def dequantize(self) -> torch.Tensor:
        """The float weight [out, in] the codes and scales stand for."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise DataError(f"{type(self).__name__}: input {tuple(x.shape)}, expected (..., {self.in_features})")
        rows = x.reshape(-1, self.in_features)
        if self.input_scale is not None:
            rows = rows * self.input_scale
        if self.dense_from_rows is not None and rows.shape[0] >= self.dense_from_rows:
            y = F.linear(rows.float(), self.dequantize()).to(x.dtype)  # many rows: one float GEMM pays off
        else:
            y = self._matmul(rows.to(ACT_DTYPE)).to(x.dtype)
        if self.bias is not None:  # on the GEMM's own 2-D rows, then back to the input's leading dims
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class Int8WeightLinear(_PackedLinear):
    """int8 weight codes [out, in] with one scale per output channel, on ``aten._weight_int8pack_mm`` for a few
    rows (decoding); from :data:`DENSE_FROM_ROWS` rows on (a prefill), where that matrix-vector kernel is several
    times slower than a GEMM, one fp32 GEMM on the de-quantized weight (fp32 activations)."""

    weight_int8: torch.Tensor
    scales: torch.Tensor
    dense_from_rows = DENSE_FROM_ROWS

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__(codes.shape[1], codes.shape[0], bias)
        self.register_buffer("weight_int8", codes.to(torch.int8).contiguous())
        self.register_buffer("scales", scales.reshape(-1).to(ACT_DTYPE).contiguous())

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x, self.weight_int8, self.scales)

    def dequantize(self) -> torch.Tensor:
        return self.weight_int8.float() * self.scales.float()[:, None]


class Int4WeightLinear(_PackedLinear):
    """int4 weight codes packed two per byte with one scale per ``group_size`` inputs, on
    ``aten._weight_int4pack_mm_for_cpu`` (codes stored offset by 8). The kernel computes ``(u - 8) * scale + term``
    per group: ``term`` is 0 on a symmetric grid, and ``-zero * scale`` with ``zeros`` (asymmetric grids, each
    weight ``(code - zero) * scale``; the term is stored in the activations' dtype like the scale, and
    :attr:`zero_points` reads the integer zero points back from it)."""

    weight_int4: torch.Tensor
    scales_zeros: torch.Tensor

    def __init__(
        self,
        codes: torch.Tensor,
        scales: torch.Tensor,
        group_size: int,
        bias: torch.Tensor | None = None,
        zeros: torch.Tensor | None = None,
    ):
        super().__init__(codes.shape[1], codes.shape[0], bias)
        if group_size not in INT4_KERNEL_GROUPS or self.in_features % group_size:
            raise ConfigError(f"int4: group_size {group_size} must be 32/64/128/256 and divide {self.in_features}")
        self.group_size = group_size
        unsigned = (codes.to(torch.int32) + 8).contiguous()
        self.register_buffer("weight_int4", torch.ops.aten._convert_weight_to_int4pack_for_cpu(unsigned, 1))
        term = torch.zeros_like(scales.float()) if zeros is None else -zeros.float() * scales.float()
        sz = torch.stack([scales.float(), term], -1)  # [out, groups, 2]
        self.register_buffer("scales_zeros", sz.transpose(0, 1).contiguous().to(ACT_DTYPE))

    @property
    def zero_points(self) -> torch.Tensor | None:
        """The integer zero points (int8 ``[out, groups]``), or None on a symmetric grid (every term 0). Exact: the
        stored term ``-zero * scale`` is off by at most ``|zero| * 2^-9`` of a step (bf16), far below one half."""
        scale, term = (self.scales_zeros[..., i].T.float() for i in (0, 1))
        if not term.any():
            return None
        return torch.round(-term / scale).to(torch.int8)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.weight_int4, self.group_size, self.scales_zeros)

    def dequantize(self) -> torch.Tensor:
        eye = torch.eye(self.in_features, dtype=ACT_DTYPE)
        return self._matmul(eye).float().T.contiguous()


def _kernel_layer(layer: PackedLinear) -> nn.Module | None:
    """The kernel-backed twin of a packed Linear, or None where no kernel fits its grid (int8 with group scales,
    int4 with a group the kernel does not support)."""
    p = layer.packed
    codes, scales = p.int_codes(), p.scales.float()
    if p.bits == 8 and p.group_size == p.cols:
        new: _PackedLinear = Int8WeightLinear(codes, scales, layer.bias)
    elif p.bits == 4 and p.group_size in INT4_KERNEL_GROUPS:
        new = Int4WeightLinear(codes, scales, p.group_size, layer.bias, p.zero_points())
    else:
        return None
    if layer.input_scale is not None:
        new.scale_input(layer.input_scale)
    return new


def to_torch_weight_only(model: nn.Module) -> tuple[nn.Module, int, int]:
    """A copy of ``model`` whose :class:`PackedLinear` layers run on the packed-weight kernels, with the number
    converted and the number left as they were (no kernel for their grid). A model without packed Linears is an
    error."""
    out = copy.deepcopy(model)
    layers = {n: m for n, m in out.named_modules() if isinstance(m, PackedLinear)}
    if not layers:
        raise UnsupportedOpError(f"{type(model).__name__}: no weight-only (packed) Linear to convert")
    converted = 0
    for name, layer in layers.items():
        new = _kernel_layer(layer)
        if new is not None:
            set_module(out, name, new)
            converted += 1
    label = weight_only_kernels(out)
    if label is not None:
        out.shrink_execution = label  # type: ignore[assignment]
    return out, converted, len(layers) - converted


def weight_only_kernels(model: nn.Module) -> str | None:
    """What ``model``'s packed-weight Linears run on, in words (None when it has none)."""
    bits = [
        b
        for b, kind in ((4, Int4WeightLinear), (8, Int8WeightLinear))
        if any(isinstance(m, kind) for m in model.modules())
    ]
    if not bits:
        return None
    return f"int{'/int'.join(map(str, bits))} weight-only (PyTorch packed-weight kernels, bf16 activations)"
