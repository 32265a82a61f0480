"""N:M semi-structured sparsity patterns: in every group of ``m`` consecutive weights along the input dimension,
keep the ``n`` of largest magnitude (2:4 is what NVIDIA's sparse tensor cores run).

Weights are viewed "input last": a Linear ``(out, in)`` as is, a convolution ``(out, in, *k)`` as
``(out, *k, in)``, so groups run along input channels, as in channels-last GEMMs (and NVIDIA's ASP). The kept
positions of a group are stored as an ``m``-bit field, packed 8 bits to a byte.
"""

from __future__ import annotations

import torch

__all__ = ["input_last", "from_input_last", "nm_mask", "check_nm", "pack_bits", "unpack_bits", "nm_compatible"]


def input_last(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` with the input dimension moved last (a view for Linear, a permuted copy for convolutions)."""
    dims = weight.dim()
    return weight if dims == 2 else weight.permute(0, *range(2, dims), 1)


def from_input_last(t: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`input_last` for a tensor of the original ``shape``."""
    if len(shape) == 2:
        return t.reshape(shape)
    permuted = (shape[0], *shape[2:], shape[1])
    dims = len(shape)  # explicit non-negative permutation: ONNX export rejects negative axes in Transpose
    return t.reshape(permuted).permute(0, dims - 1, *range(1, dims - 1))


def nm_compatible(weight: torch.Tensor, m: int) -> bool:
    """True if the input dimension (``weight.shape[1]``) splits into whole groups of ``m``."""
    return weight.dim() >= 2 and weight.shape[1] % m == 0


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Boolean keep-mask of ``weight``'s shape with exactly ``n`` True in every group of ``m`` input weights."""
    if not 0 < n < m:
        raise ValueError(f"N:M needs 0 < n < m, got {n}:{m}")
    if not nm_compatible(weight, m):
        raise ValueError(
            f"input dimension {weight.shape[1] if weight.dim() >= 2 else '?'} of a weight of shape "
            f"{tuple(weight.shape)} is not a multiple of m={m}"
        )
    groups = input_last(weight.detach()).abs().reshape(-1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, torch.topk(groups, n, dim=1).indices, True)
    return from_input_last(keep, weight.shape).contiguous()


def check_nm(mask_or_weight: torch.Tensor, n: int, m: int, exact: bool = True) -> bool:
    """True if every group of ``m`` input weights holds exactly (``exact``) or at most ``n`` non-zeros."""
    if not nm_compatible(mask_or_weight, m):
        return False
    counts = (input_last(mask_or_weight) != 0).reshape(-1, m).sum(dim=1)
    return bool((counts == n).all()) if exact else bool((counts <= n).all())


_SHIFTS = torch.arange(7, -1, -1, dtype=torch.uint8)
#: row b holds the 8 bits of byte b, most significant first (a table lookup exports to ONNX as one Gather)
_BYTE_BITS = ((torch.arange(256).unsqueeze(1) >> torch.arange(7, -1, -1)) & 1).to(torch.bool)


def pack_bits(flags: torch.Tensor) -> torch.Tensor:
    """Booleans (any shape, row-major) packed 8 to a uint8, most significant bit first, zero-padded."""
    flat = flags.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.reshape(-1, 8) << _SHIFTS.to(flat.device)).sum(dim=1, dtype=torch.uint8)


def unpack_bits(bits: torch.Tensor, count: int) -> torch.Tensor:
    """The first ``count`` booleans of a :func:`pack_bits` result."""
    return _BYTE_BITS.to(bits.device)[bits.reshape(-1).long()].reshape(-1)[:count]
