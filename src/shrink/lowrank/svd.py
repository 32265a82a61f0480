"""Truncated SVD of a Linear layer: ``W ≈ (U√S)(√S Vᵀ)``, i.e. two Linears ``in → r → out``."""

from __future__ import annotations

import torch
from torch import nn

from shrink.lowrank.factorized import Factorized

__all__ = ["svd_linear", "singular_values"]


def singular_values(weight: torch.Tensor) -> torch.Tensor:
    """Singular values of a weight matrix (descending), computed in float64."""
    return torch.linalg.svdvals(weight.detach().double())


def svd_linear(layer: nn.Linear, rank: int) -> Factorized:
    """Rank-``rank`` factorization of ``layer``: the best approximation in Frobenius norm (Eckart–Young); the
    squared error is the sum of the discarded squared singular values."""
    w = layer.weight.detach().double()
    if not 1 <= rank <= min(w.shape):
        raise ValueError(f"rank must be in [1, {min(w.shape)}], got {rank}")
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    root = s[:rank].sqrt()
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    dtype = layer.weight.dtype
    with torch.no_grad():
        first.weight.copy_((root[:, None] * vh[:rank]).to(dtype))
        second.weight.copy_((u[:, :rank] * root[None, :]).to(dtype))
        if layer.bias is not None:
            second.bias.copy_(layer.bias.detach())
    return Factorized(first, second, method="svd", rank=str(rank))
