"""Fake quantization with the straight-through estimator, on top of :mod:`shrink.quant.numerics.qparams`.

The forward pass is :func:`shrink.quant.numerics.qparams.fake_quantize`; the backward pass lets the gradient through
unchanged where the value rounds into the grid's range and blocks it where the value was clipped (Bengio et al.
2013; the clipped STE used by QAT in PyTorch and TensorFlow).
"""

from __future__ import annotations

import torch

from shrink.quant.numerics.qparams import QParams, dequantize, fake_quantize

__all__ = ["fake_quantize_ste", "grid_bounds"]


def grid_bounds(x: torch.Tensor, qp: QParams) -> tuple[torch.Tensor, torch.Tensor]:
    """The real values of the lowest and highest code of ``qp``, broadcast to ``x``'s shape."""
    lo = dequantize(torch.full(x.shape, qp.qmin, dtype=torch.int32, device=x.device), qp)
    hi = dequantize(torch.full(x.shape, qp.qmax, dtype=torch.int32, device=x.device), qp)
    return lo.to(x.dtype), hi.to(x.dtype)


def fake_quantize_ste(x: torch.Tensor, qp: QParams) -> torch.Tensor:
    """``fake_quantize(x, qp)`` with gradient ``1`` where ``x`` rounds to a code inside ``qp``'s range and ``0``
    where it was clipped (PyTorch's ``fake_quantize_per_*_affine`` rule)."""
    lo, hi = grid_bounds(x, qp)
    half = (hi - lo) / (2 * (qp.qmax - qp.qmin))
    inside = ((x >= lo - half) & (x < hi + half)).to(x.dtype)
    fq = fake_quantize(x.detach(), qp)
    return fq + (x - x.detach()) * inside
