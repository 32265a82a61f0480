"""Rank choice: by retained energy of the singular values, or by a parameter budget."""

from __future__ import annotations

import math

import torch

__all__ = ["energy_rank", "svd_budget_rank", "tucker_budget_ranks", "cp_budget_rank"]


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest rank whose singular values keep at least ``energy`` of ``sum(s²)``."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    s2 = singular_values.double().pow(2)
    cumulative = torch.cumsum(s2, 0) / s2.sum().clamp_min(1e-300)
    return min(int(torch.searchsorted(cumulative, torch.tensor(energy, dtype=torch.float64) - 1e-12)) + 1, len(s2))


def svd_budget_rank(out_features: int, in_features: int, fraction: float) -> int:
    """Largest rank ``r`` with ``r · (in + out) ≤ fraction · in · out`` (at least 1)."""
    return max(1, math.floor(fraction * out_features * in_features / (out_features + in_features)))


def tucker_budget_ranks(out_ch: int, in_ch: int, kernel_area: int, fraction: float) -> tuple[int, int]:
    """Tucker-2 ranks ``(r_out, r_in) = ρ · (out, in)`` with ``in·r_in + r_in·r_out·k + r_out·out`` within
    ``fraction`` of ``out · in · k`` (the largest such ρ; ranks at least 1)."""
    a = out_ch * in_ch * kernel_area  # quadratic in rho: a·rho² + (in² + out²)·rho - fraction·a = 0
    b = in_ch * in_ch + out_ch * out_ch
    rho = (-b + math.sqrt(b * b + 4 * a * fraction * a)) / (2 * a)
    return max(1, math.floor(rho * out_ch)), max(1, math.floor(rho * in_ch))


def cp_budget_rank(out_ch: int, in_ch: int, kh: int, kw: int, fraction: float) -> int:
    """Largest CP rank ``R`` with ``R · (in + kh + kw + out) ≤ fraction · out · in · kh · kw`` (at least 1)."""
    return max(1, math.floor(fraction * out_ch * in_ch * kh * kw / (in_ch + kh + kw + out_ch)))
