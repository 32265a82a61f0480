"""Sparsity schedules: the per-cycle targets of iterative pruning and the gradual polynomial schedule of
Zhu & Gupta (2017, "To prune, or not to prune").

Both are plain functions of integers so they can be tested alone and reused by any training loop.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["polynomial_sparsity", "polynomial_steps", "iterative_sparsities"]


def polynomial_sparsity(
    t: int, *, initial: float, final: float, start: int, steps: int, frequency: int = 1, power: int = 3
) -> float:
    """Zhu & Gupta's target sparsity at step ``t``:

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3`` for ``t0 <= t <= t0 + n * dt``,
    ``s_i`` before ``t0`` and ``s_f`` after. The sparsity rises fast early, while many redundant weights remain,
    and slowly at the end. ``power`` is 3 in the paper.
    """
    if steps < 1 or frequency < 1:
        raise ValueError(f"steps and frequency must be >= 1, got steps={steps}, frequency={frequency}")
    if not 0.0 <= initial <= final < 1.0:
        raise ValueError(f"need 0 <= initial <= final < 1, got initial={initial}, final={final}")
    span = steps * frequency
    if t <= start:
        return initial
    if t >= start + span:
        return final
    progress = (t - start) / span
    return final + (initial - final) * (1.0 - progress) ** power


def polynomial_steps(*, start: int, steps: int, frequency: int = 1) -> list[int]:
    """The times ``t0, t0 + dt, ..., t0 + n * dt`` at which the masks are updated (``n + 1`` updates)."""
    return [start + k * frequency for k in range(steps + 1)]


def iterative_sparsities(
    final: float, cycles: int, spacing: Literal["geometric", "linear", "cubic"] = "geometric"
) -> list[float]:
    """Target sparsity after each of ``cycles`` prune -> fine-tune cycles, ending exactly at ``final``.

    ``"geometric"`` removes the same fraction of the *remaining* weights each cycle (Han et al. 2015; lottery-ticket
    style): ``1 - (1 - final) ** (k / cycles)``. ``"linear"`` raises the sparsity by equal amounts. ``"cubic"`` is
    Zhu & Gupta's polynomial over the cycles, ``final · (1 - (1 - k / cycles)^3)``: large steps while the network
    is still redundant, small ones near the end.
    """
    if cycles < 1:
        raise ValueError(f"cycles must be >= 1, got {cycles}")
    if not 0.0 <= final < 1.0:
        raise ValueError(f"final sparsity must be in [0, 1), got {final}")
    if spacing == "geometric":
        out = [1.0 - (1.0 - final) ** (k / cycles) for k in range(1, cycles + 1)]
    elif spacing == "linear":
        out = [final * k / cycles for k in range(1, cycles + 1)]
    elif spacing == "cubic":
        out = [final * (1.0 - (1.0 - k / cycles) ** 3) for k in range(1, cycles + 1)]
    else:
        raise ValueError(f"spacing must be 'geometric', 'linear' or 'cubic', got {spacing!r}")
    out[-1] = final
    return out
