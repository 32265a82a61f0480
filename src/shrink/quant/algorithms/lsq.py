"""Learned Step Size Quantization (LSQ, Esser et al., ICLR 2020).

Fake quantization ``x̂ = round(clamp(x / s, Qn, Qp)) * s`` whose step size ``s`` is a trainable parameter. The
rounding passes gradients straight through (STE); the clamp stops them outside the range; ``s`` receives the
LSQ gradient, scaled by ``g = 1 / sqrt(numel · Qp)`` so step sizes and weights learn at comparable rates. The step is
symmetric (zero point 0): signed ``[-2^(b-1), 2^(b-1)-1]`` for weights and signed activations, unsigned
``[0, 2^b - 1]`` for non-negative activations (after ReLU, or images in [0, 1]).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LsqQuantizer", "round_ste", "grad_scale", "lsq_range"]


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest (half to even, as ``torch.round`` and ONNX) with an identity gradient."""
    return x + (torch.round(x) - x).detach()


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` in the forward pass; its gradient multiplied by ``scale`` in the backward pass."""
    return x * scale + (x - x * scale).detach()


def lsq_range(bits: int, signed: bool) -> tuple[int, int]:
    """``(Qn, Qp)``: the integer range of a symmetric signed or unsigned ``bits``-bit quantizer."""
    if not 1 < bits <= 16:
        raise ValueError(f"LSQ bit width must be in [2, 16], got {bits}")
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _global_count(n: int) -> int:
    """``n`` summed over the ranks of a running torch.distributed job (``n`` itself otherwise)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return n
    total = torch.tensor([n], dtype=torch.float64)
    dist.all_reduce(total)
    return int(total.item())


class LsqQuantizer(nn.Module):
    """Fake quantizer with a learned step size, per tensor (``channel_axis=None``) or per channel.

    The step is initialised lazily on the first forward pass (``2·mean|x| / sqrt(Qp)``, the paper's choice) unless
    :meth:`init_from` sets it, e.g. from an observer's calibrated scale.
    """

    initialized: torch.Tensor

    def __init__(
        self,
        bits: int,
        signed: bool,
        channel_axis: int | None = None,
        num_channels: int = 1,
        batch_sliced: bool = False,
    ) -> None:
        super().__init__()
        self.bits, self.signed, self.channel_axis = bits, signed, channel_axis
        #: the input is a slice of the batch (activations): under DDP the step gradient's scale counts the elements
        #: of the whole global batch, as one process would, not those of this rank's slice
        self.batch_sliced = batch_sliced
        self.qn, self.qp = lsq_range(bits, signed)
        self.step = nn.Parameter(torch.ones(num_channels if channel_axis is not None else 1))
        self.register_buffer("initialized", torch.tensor(False))

    def extra_repr(self) -> str:
        kind = "signed" if self.signed else "unsigned"
        return f"bits={self.bits}, {kind}, channel_axis={self.channel_axis}"

    def _shape(self, x: torch.Tensor) -> list[int]:
        shape = [1] * x.dim()
        if self.channel_axis is not None:
            shape[self.channel_axis] = -1
        return shape

    @torch.no_grad()
    def init_from(self, step: torch.Tensor) -> None:
        """Set the step size (a scalar or one value per channel) and mark the quantizer initialised."""
        step = torch.as_tensor(step, dtype=self.step.dtype).reshape(-1).clamp_min(1e-8)
        self.step.copy_(step.expand_as(self.step))
        self.initialized.fill_(True)

    @torch.no_grad()
    def _lazy_init(self, x: torch.Tensor) -> None:
        if self.channel_axis is None:
            mean_abs = x.abs().mean()
        else:
            dims = [d for d in range(x.dim()) if d != self.channel_axis % x.dim()]
            mean_abs = x.abs().mean(dim=dims)
        self.init_from(2 * mean_abs / math.sqrt(self.qp))

    def scale(self) -> torch.Tensor:
        """The current step size(s), detached: the scale of the integer model this quantizer converts to."""
        return self.step.detach().abs().clamp_min(1e-8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized):
            self._lazy_init(x)
        numel = x.numel() if self.channel_axis is None else x.numel() // x.shape[self.channel_axis]
        if self.batch_sliced and self.training and torch.is_grad_enabled():
            numel = _global_count(numel)
        g = 1.0 / math.sqrt(max(numel, 1) * self.qp)
        s = grad_scale(self.step.abs().clamp_min(1e-8), g).reshape(self._shape(x))
        q = round_ste(torch.clamp(x / s, self.qn, self.qp))
        return q * s
