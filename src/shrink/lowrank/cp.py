"""CP (canonical polyadic) decomposition of a Conv2d into separable convolutions (Lebedev et al., 2015):
``W ≈ Σ_r λ_r a_r ⊗ b_r ⊗ c_r ⊗ d_r`` computed by alternating least squares, run as
``1x1 (in → R) → k×1 depthwise → 1×k depthwise → 1x1 (R → out)``."""

from __future__ import annotations

import torch
from torch import nn

from shrink.lowrank.factorized import Factorized

__all__ = ["cp_factors", "cp_conv", "cp_reconstruct"]


_MTTKRP = ("abcd,br,cr,dr->ar", "abcd,ar,cr,dr->br", "abcd,ar,br,dr->cr", "abcd,ar,br,cr->dr")


def _init_factor(unfolding: torch.Tensor, rank: int, gen: torch.Generator) -> torch.Tensor:
    u = torch.linalg.svd(unfolding, full_matrices=False)[0][:, :rank]
    if u.shape[1] < rank:  # mode smaller than the rank: fill the remaining columns randomly
        extra = torch.randn(u.shape[0], rank - u.shape[1], generator=gen, dtype=u.dtype)
        u = torch.cat([u, extra / extra.norm(dim=0, keepdim=True)], 1)
    return u


def cp_factors(
    weight: torch.Tensor, rank: int, n_iter: int = 100, seed: int = 0, tol: float = 1e-7
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(λ, [A_out, B_in, C_h, D_w])`` of a rank-``rank`` CP decomposition of a 4-D conv weight by alternating
    least squares (SVD initialisation), in float64: ``W ≈ Σ_r λ_r a_r ⊗ b_r ⊗ c_r ⊗ d_r``.

    Written in torch (it honours ``torch.set_num_threads``); tests compare it with tensorly's ``parafac``.
    """
    x = weight.detach().double()
    if x.dim() != 4:
        raise ValueError(f"cp_factors expects a 4-D conv weight, got shape {tuple(x.shape)}")
    gen = torch.Generator().manual_seed(seed)
    factors = [_init_factor(x.movedim(n, 0).reshape(x.shape[n], -1), rank, gen) for n in range(4)]
    norm_x, previous = x.norm(), float("inf")
    for it in range(n_iter):
        for n in range(4):
            others = [factors[m] for m in range(4) if m != n]
            gram = torch.ones(rank, rank, dtype=x.dtype)
            for f in others:
                gram = gram * (f.T @ f)
            mttkrp = torch.einsum(_MTTKRP[n], x, *others)
            ridge = 1e-10 * float(gram.diagonal().mean()) * torch.eye(rank, dtype=x.dtype)  # keeps it invertible
            factors[n] = torch.linalg.solve(gram + ridge, mttkrp.T).T
            if n < 3:
                factors[n] = factors[n] / factors[n].norm(dim=0, keepdim=True).clamp_min(1e-300)
        if it % 5 == 4 or it == n_iter - 1:
            error = float((x - _reconstruct(torch.ones(rank, dtype=x.dtype), factors)).norm() / norm_x)
            if abs(previous - error) < tol:
                break
            previous = error
    lam = factors[3].norm(dim=0).clamp_min(1e-300)
    factors[3] = factors[3] / lam
    return lam, factors


def _reconstruct(lam: torch.Tensor, factors: list[torch.Tensor]) -> torch.Tensor:
    return torch.einsum("r,ar,br,cr,dr->abcd", lam, *factors)


def cp_conv(layer: nn.Conv2d, rank: int, n_iter: int = 100, seed: int = 0) -> Factorized:
    """Replace ``layer`` (groups=1, numeric padding) by its rank-``rank`` CP factorization (four convolutions)."""
    if layer.groups != 1:
        raise ValueError(f"CP decomposition needs groups=1, got groups={layer.groups}")
    if isinstance(layer.padding, str):
        raise ValueError(f"CP decomposition needs numeric padding, got padding={layer.padding!r}")
    lam, (a, b, c, d) = cp_factors(layer.weight, rank, n_iter, seed)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = layer.kernel_size, layer.stride, layer.padding, layer.dilation
    first = nn.Conv2d(layer.in_channels, rank, 1, bias=False)
    vertical = nn.Conv2d(rank, rank, (kh, 1), (sh, 1), (ph, 0), (dh, 1), groups=rank, bias=False)
    horizontal = nn.Conv2d(rank, rank, (1, kw), (1, sw), (0, pw), (1, dw), groups=rank, bias=False)
    last = nn.Conv2d(rank, layer.out_channels, 1, bias=layer.bias is not None)
    dtype = layer.weight.dtype
    with torch.no_grad():
        first.weight.copy_(b.T[:, :, None, None].to(dtype))
        vertical.weight.copy_(c.T[:, None, :, None].to(dtype))
        horizontal.weight.copy_(d.T[:, None, None, :].to(dtype))
        last.weight.copy_((a * lam[None, :])[:, :, None, None].to(dtype))
        if layer.bias is not None and last.bias is not None:
            last.bias.copy_(layer.bias.detach())
    return Factorized(first, vertical, horizontal, last, method="cp", rank=str(rank))


def cp_reconstruct(lam: torch.Tensor, factors: list[torch.Tensor]) -> torch.Tensor:
    """The 4-D tensor ``Σ_r λ_r a_r ⊗ b_r ⊗ c_r ⊗ d_r``."""
    return _reconstruct(lam, factors)
