"""Quantization parameters and the quantize / dequantize / fake-quantize arithmetic.

An integer grid ``q = clamp(round(x / scale) + zero_point, qmin, qmax)`` with ``x ≈ (q - zero_point) * scale``.
Rounding is half-to-even and the zero point is an integer, exactly as PyTorch's quantized tensors and ONNX
``QuantizeLinear`` do, so real 0.0 maps to an integer and back to 0.0 exactly (padding, ReLU zeros, masks).

Granularity: one scale for the whole tensor, one per slice along ``axis`` (per-channel), or one per group of
``group_size`` consecutive elements along the last dimension (per-group, the input dim of a Linear weight).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shrink.errors import ConfigError, DataError

__all__ = [
    "dynamic_fake_quant",
    "QParams",
    "SUPPORTED_BITS",
    "check_bits",
    "qrange",
    "compute_qparams",
    "qparams_for_tensor",
    "quantize",
    "dequantize",
    "fake_quantize",
    "storage_dtype",
]

SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8, 16)


def check_bits(bits: int, where: str = "bits") -> int:
    """Return ``bits`` if it is a supported width (2-8 or 16), else raise ConfigError naming ``where``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in SUPPORTED_BITS:
        raise ConfigError(f"{where}: bit width {bits!r} is not supported (use 2-8 or 16)")
    return bits


def qrange(bits: int, signed: bool, narrow_range: bool = False) -> tuple[int, int]:
    """Integer range of a ``bits``-wide grid; ``narrow_range`` drops the most negative code (e.g. [-127, 127])."""
    check_bits(bits)
    if signed:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        return (lo + 1 if narrow_range else lo), hi
    return (1 if narrow_range else 0), 2**bits - 1


def storage_dtype(bits: int, signed: bool) -> torch.dtype:
    """Smallest torch integer dtype that holds the grid (int4 values live in int8 until packed)."""
    if bits <= 8:
        return torch.int8 if signed else torch.uint8
    return torch.int16 if signed else torch.int32


@dataclass(frozen=True)
class QParams:
    """Scale(s) and integer zero point(s) of a quantization grid.

    ``scale``/``zero_point`` are 0-d for per-tensor, shape ``(C,)`` for per-channel along ``axis``, or
    ``x.shape[:-1] + (K // group_size,)`` for per-group along the last dim.
    """

    scale: torch.Tensor
    zero_point: torch.Tensor
    bits: int = 8
    signed: bool = True
    axis: int | None = None
    group_size: int | None = None
    narrow_range: bool = False

    @property
    def qmin(self) -> int:
        return qrange(self.bits, self.signed, self.narrow_range)[0]

    @property
    def qmax(self) -> int:
        return qrange(self.bits, self.signed, self.narrow_range)[1]

    @property
    def symmetric(self) -> bool:
        mid = 0 if self.signed else 2 ** (self.bits - 1)
        return bool((self.zero_point == mid).all())

    @property
    def dtype(self) -> torch.dtype:
        return storage_dtype(self.bits, self.signed)


def compute_qparams(
    min_val: torch.Tensor | float,
    max_val: torch.Tensor | float,
    bits: int = 8,
    *,
    symmetric: bool = False,
    signed: bool = True,
    axis: int | None = None,
    group_size: int | None = None,
    narrow_range: bool = False,
    eps: float = 1e-12,
) -> QParams:
    """Grid covering ``[min_val, max_val]`` (widened to include 0 so zero stays exact).

    Symmetric grids have zero point 0 (signed) or the mid code (unsigned, as PyTorch's 128 for uint8);
    asymmetric grids use the whole range with an integer zero point clamped into it.
    """
    qmin, qmax = qrange(bits, signed, narrow_range)
    lo = torch.as_tensor(min_val, dtype=torch.float32)
    hi = torch.as_tensor(max_val, dtype=torch.float32)
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise DataError("compute_qparams: range contains NaN or Inf")
    lo, hi = torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))
    if symmetric:
        amax = torch.maximum(-lo, hi)
        scale = (amax / ((qmax - qmin) / 2)).clamp(min=eps)
        mid = 0 if signed else (qmin + qmax + 1) // 2
        zero_point = torch.full_like(scale, mid, dtype=torch.int32)
    else:
        scale = ((hi - lo) / (qmax - qmin)).clamp(min=eps)
        zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int32)
    return QParams(scale.float(), zero_point, bits, signed, axis, group_size, narrow_range)


def _rows(x: torch.Tensor, axis: int | None, group_size: int | None) -> torch.Tensor:
    """``x`` viewed as (rows, n): one row per scale."""
    if group_size is not None:
        if x.shape[-1] % group_size:
            raise ConfigError(f"group_size {group_size} does not divide the last dim {x.shape[-1]}")
        return x.reshape(-1, group_size)
    if axis is not None:
        return x.movedim(axis, 0).reshape(x.shape[axis], -1)
    return x.reshape(1, -1)


def qparams_for_tensor(
    x: torch.Tensor,
    bits: int = 8,
    *,
    symmetric: bool = True,
    signed: bool = True,
    axis: int | None = None,
    group_size: int | None = None,
    narrow_range: bool = False,
) -> QParams:
    """Min-max grid of ``x`` itself (typical for weights), per tensor, per channel or per group."""
    if not torch.isfinite(x).all():
        raise DataError("qparams_for_tensor: tensor contains NaN or Inf")
    rows = _rows(x.detach().float(), axis, group_size)
    lo, hi = rows.min(dim=1).values, rows.max(dim=1).values
    if group_size is not None:
        shape = (*x.shape[:-1], x.shape[-1] // group_size)
        lo, hi = lo.reshape(shape), hi.reshape(shape)
    elif axis is None:
        lo, hi = lo[0], hi[0]
    return compute_qparams(
        lo, hi, bits, symmetric=symmetric, signed=signed, axis=axis, group_size=group_size, narrow_range=narrow_range
    )


def _expand(qp: QParams, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x`` (regrouped if per-group), scale and zero point broadcastable against it."""
    scale, zp = qp.scale.to(x.device), qp.zero_point.to(x.device)
    if qp.group_size is not None:
        g = qp.group_size
        if x.shape[-1] % g:
            raise ConfigError(f"group_size {g} does not divide the last dim {x.shape[-1]}")
        xg = x.reshape(*x.shape[:-1], x.shape[-1] // g, g)
        return xg, scale.unsqueeze(-1), zp.unsqueeze(-1)
    if qp.axis is not None and scale.dim() == 1:
        axis = qp.axis % x.dim()
        shape = [1] * x.dim()
        shape[axis] = -1
        return x, scale.reshape(shape), zp.reshape(shape)
    return x, scale, zp


def quantize(x: torch.Tensor, qp: QParams) -> torch.Tensor:
    """Integer codes of ``x`` (round half to even, then clamp), in the grid's storage dtype."""
    xg, scale, zp = _expand(qp, x.float())
    q = torch.clamp(torch.round(xg / scale) + zp, qp.qmin, qp.qmax)
    return q.reshape(x.shape).to(qp.dtype)


def dequantize(q: torch.Tensor, qp: QParams) -> torch.Tensor:
    """Real values ``(q - zero_point) * scale`` as float32."""
    qg, scale, zp = _expand(qp, q.to(torch.int32))
    return ((qg - zp).float() * scale).reshape(q.shape)


def fake_quantize(x: torch.Tensor, qp: QParams) -> torch.Tensor:
    """``dequantize(quantize(x))`` in float, keeping ``x``'s dtype (no gradient trick; see the QAT code for STE)."""
    xg, scale, zp = _expand(qp, x.float())
    q = torch.clamp(torch.round(xg / scale) + zp, qp.qmin, qp.qmax)
    return ((q - zp) * scale).reshape(x.shape).to(x.dtype)


def dynamic_fake_quant(x: torch.Tensor, per_token: bool = False) -> torch.Tensor:
    """What ``DynamicQuantizeLinear`` does to ``x``: u8 over ``[min(x, 0), max(x, 0)]``, round half to even;
    ``per_token``: one grid per row (last dim) from the row's min to its max, as the per-token ONNX graph has it."""
    if per_token:  # 256 steps from each row's minimum to its maximum (see onnx_ops.TokenQLinear)
        lo, hi = x.detach().amin(dim=-1, keepdim=True), x.detach().amax(dim=-1, keepdim=True)
        scale = ((hi - lo) * (1.0 / 255.0)).clamp(min=1e-12)
        return (torch.clamp(torch.round((x - lo) * scale.reciprocal()), 0, 255) * scale + lo).to(x.dtype)
    else:
        lo, hi = x.detach().min().clamp(max=0.0), x.detach().max().clamp(min=0.0)
    scale = ((hi - lo) / 255.0).clamp(min=1e-12)
    zp = torch.clamp(torch.round(-lo / scale), 0, 255)
    return ((torch.clamp(torch.round(x / scale) + zp, 0, 255) - zp) * scale).to(x.dtype)
