"""Fixed-point requantization as integer-only hardware does it (gemmlowp / TFLite, Jacob et al. 2018).

A real multiplier ``m = s_in * s_w / s_out`` (0 < m < 1 in practice) is written ``m = M0 * 2**-31 * 2**shift`` with
an int32 ``M0`` in ``[2**30, 2**31)``. Applying it to an int32 accumulator uses only integer operations:
``SaturatingRoundingDoublingHighMul(acc, M0)`` (the high 32 bits of ``2 * acc * M0``, rounded to nearest) followed
by ``RoundingDivideByPOT(., -shift)`` (an arithmetic right shift rounding half away from zero). Only
:func:`quantize_multiplier` touches floats: it runs once, offline, when the integer model is built.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "INT32_MIN",
    "INT32_MAX",
    "quantize_multiplier",
    "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier",
    "requantize",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """``(M0, shift)`` with ``real_multiplier ≈ M0 * 2**(shift - 31)`` and ``M0`` in ``[2**30, 2**31)``.

    ``shift`` is positive for a left shift (multiplier ≥ 1) and negative for a right shift. A zero multiplier
    gives ``(0, 0)``.
    """
    if not math.isfinite(real_multiplier) or real_multiplier < 0:
        raise ValueError(f"requantization multiplier must be finite and >= 0, got {real_multiplier}")
    if real_multiplier == 0.0:
        return 0, 0
    mantissa, exponent = math.frexp(real_multiplier)  # real = mantissa * 2**exponent, mantissa in [0.5, 1)
    m0 = round(mantissa * (1 << 31))
    if m0 == 1 << 31:  # mantissa rounded up to 1.0
        m0 //= 2
        exponent += 1
    if exponent < -31:  # too small to represent: the product is zero after the shift anyway
        return 0, 0
    if exponent > 30:
        raise ValueError(f"requantization multiplier {real_multiplier} is too large for int32 fixed point")
    return int(m0), int(exponent)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """High 32 bits of ``2 * a * b`` rounded to nearest (ties away from zero), int32 in and out.

    The single overflow case ``a == b == INT32_MIN`` saturates to ``INT32_MAX``, as in gemmlowp.
    """
    a = np.asarray(a)
    if a.dtype != np.int32:
        raise TypeError(f"saturating_rounding_doubling_high_mul: a must be int32, got {a.dtype}")
    b64 = np.asarray(b, dtype=np.int64)
    ab = a.astype(np.int64) * b64
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    total = ab + nudge
    # C integer division truncates toward zero; numpy's // floors, so divide the magnitude
    high = np.where(total >= 0, total >> 31, -((-total) >> 31))
    overflow = (a == INT32_MIN) & (b64 == INT32_MIN)
    return np.where(overflow, np.int64(INT32_MAX), high).astype(np.int32)


def rounding_divide_by_pot(x: np.ndarray, exponent: int) -> np.ndarray:
    """``x / 2**exponent`` rounded to nearest, ties away from zero; int32 in and out, ``0 <= exponent <= 31``."""
    x = np.asarray(x)
    if x.dtype != np.int32:
        raise TypeError(f"rounding_divide_by_pot: x must be int32, got {x.dtype}")
    if not 0 <= exponent <= 31:
        raise ValueError(f"rounding_divide_by_pot: exponent must be in [0, 31], got {exponent}")
    mask = np.int32((1 << exponent) - 1)
    remainder = x & mask
    threshold = (mask >> np.int32(1)) + (x < 0).astype(np.int32)
    return ((x >> np.int32(exponent)) + (remainder > threshold).astype(np.int32)).astype(np.int32)


def multiply_by_quantized_multiplier(x: np.ndarray, m0: int | np.ndarray, shift: int | np.ndarray) -> np.ndarray:
    """``x * M0 * 2**(shift - 31)`` on int32 values, as TFLite's ``MultiplyByQuantizedMultiplier``.

    ``m0`` and ``shift`` may be arrays broadcasting against ``x`` (per-channel requantization).
    """
    x = np.asarray(x)
    if x.dtype != np.int32:
        raise TypeError(f"multiply_by_quantized_multiplier: x must be int32, got {x.dtype}")
    m0 = np.asarray(m0, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = np.clip(x.astype(np.int64) << left, INT32_MIN, INT32_MAX).astype(np.int32)
    high = saturating_rounding_doubling_high_mul(shifted, m0)
    if right.ndim == 0:
        return rounding_divide_by_pot(high, int(right))
    high, right = np.broadcast_arrays(high, right)
    out = np.empty(high.shape, dtype=np.int32)
    for r in np.unique(right):
        sel = right == r
        out[sel] = rounding_divide_by_pot(high[sel], int(r))
    return out


def requantize(
    acc: np.ndarray, m0: int | np.ndarray, shift: int | np.ndarray, zero_point: int, qmin: int, qmax: int
) -> np.ndarray:
    """int32 accumulator → output integers: fixed-point multiply, add the output zero point, clamp to
    ``[qmin, qmax]`` (a fused ReLU is a raised ``qmin``). Returns int32 holding values in range."""
    scaled = multiply_by_quantized_multiplier(acc, m0, shift)
    out = scaled.astype(np.int64) + np.int64(zero_point)
    return np.clip(out, qmin, qmax).astype(np.int32)
