"""Tucker-2 decomposition of a Conv2d over its output and input channel modes (Kim et al., 2016):
``1x1 (in → r_in) → k×k core (r_in → r_out, original stride/padding) → 1x1 (r_out → out)``."""

from __future__ import annotations

import torch
from torch import nn

from shrink.lowrank.factorized import Factorized

__all__ = ["tucker2_factors", "tucker2_conv", "mode_singular_values"]


def _unfold(w: torch.Tensor, mode: int) -> torch.Tensor:
    return w.movedim(mode, 0).reshape(w.shape[mode], -1)


def mode_singular_values(weight: torch.Tensor, mode: int) -> torch.Tensor:
    """Singular values of the mode-``mode`` unfolding of a conv weight (0 = output, 1 = input channels)."""
    return torch.linalg.svdvals(_unfold(weight.detach().double(), mode))


def _leading(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    return torch.linalg.svd(matrix, full_matrices=False)[0][:, :rank]


def tucker2_factors(
    weight: torch.Tensor, r_out: int, r_in: int, method: str = "hooi", n_iter: int = 20
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(core, U_out, U_in)`` with ``weight ≈ core ×₀ U_out ×₁ U_in`` (orthonormal factors), in float64.

    ``"hosvd"``: leading singular vectors of each unfolding; ``"hooi"``: alternating refinement started from
    HOSVD (each factor re-fitted to the weight projected on the other), which never increases the error.
    Written in torch (it honours ``torch.set_num_threads``); tests compare it with tensorly's ``partial_tucker``.
    """
    if method not in ("hosvd", "hooi"):
        raise ValueError(f"tucker method must be 'hosvd' or 'hooi', got {method!r}")
    w = weight.detach().double()
    u_out, u_in = _leading(_unfold(w, 0), r_out), _leading(_unfold(w, 1), r_in)
    for _ in range(n_iter if method == "hooi" else 0):
        u_out = _leading(_unfold(torch.einsum("oikl,is->oskl", w, u_in), 0), r_out)
        u_in = _leading(_unfold(torch.einsum("oikl,or->rikl", w, u_out), 1), r_in)
    core = torch.einsum("oikl,or,is->rskl", w, u_out, u_in)
    return core, u_out, u_in


def tucker2_conv(layer: nn.Conv2d, r_out: int, r_in: int, method: str = "hooi") -> Factorized:
    """Replace ``layer`` (groups=1) by its Tucker-2 factorization as three convolutions."""
    if layer.groups != 1:
        raise ValueError(f"Tucker-2 needs groups=1, got groups={layer.groups}")
    core, u_out, u_in = tucker2_factors(layer.weight, r_out, r_in, method)
    first = nn.Conv2d(layer.in_channels, r_in, 1, bias=False)
    middle = nn.Conv2d(
        r_in,
        r_out,
        layer.kernel_size,  # type: ignore[arg-type]  # torch stores these as tuple[int, ...]
        layer.stride,  # type: ignore[arg-type]
        layer.padding,  # type: ignore[arg-type]
        layer.dilation,  # type: ignore[arg-type]
        bias=False,
        padding_mode=layer.padding_mode,
    )
    last = nn.Conv2d(r_out, layer.out_channels, 1, bias=layer.bias is not None)
    dtype = layer.weight.dtype
    with torch.no_grad():
        first.weight.copy_(u_in.T[:, :, None, None].to(dtype))
        middle.weight.copy_(core.to(dtype))  # (r_out, r_in, kh, kw) is already the conv layout
        last.weight.copy_(u_out[:, :, None, None].to(dtype))
        if layer.bias is not None and last.bias is not None:
            last.bias.copy_(layer.bias.detach())
    return Factorized(first, middle, last, method="tucker2", rank=f"{r_out}x{r_in}")
