"""Fixed-point requantization (gemmlowp / TFLite): integer-only, exact within 1 LSB of a float64 reference."""

import numpy as np
import pytest

from shrink.quant.numerics.fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    requantize,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)


@pytest.mark.parametrize("m", [0.9999999, 0.5, 0.3, 0.0123, 1.7e-4, 3e-7, 1.0, 2.5, 37.0])
def test_quantize_multiplier_normalized_and_accurate(m):
    m0, shift = quantize_multiplier(m)
    assert 2**30 <= m0 < 2**31
    assert abs(m0 * 2.0 ** (shift - 31) - m) <= m * 2.0**-30


def test_quantize_multiplier_zero_and_invalid():
    assert quantize_multiplier(0.0) == (0, 0)
    with pytest.raises(ValueError):
        quantize_multiplier(-0.1)
    with pytest.raises(ValueError):
        quantize_multiplier(float("nan"))


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


@pytest.mark.parametrize("m", [0.9999999, 0.3, 0.0123, 1.7e-4, 2.7])
def test_multiply_by_quantized_multiplier_within_one_lsb(m):
    rng = np.random.default_rng(0)
    x = rng.integers(-(2**24), 2**24, size=20000).astype(np.int32)
    x[:4] = [0, 1, -1, 2**20]
    m0, shift = quantize_multiplier(m)
    y = multiply_by_quantized_multiplier(x, m0, shift)
    assert y.dtype == np.int32
    ref = _round_half_away(x.astype(np.float64) * m)
    # two roundings (high-mul, then shift) can each move a tie: never more than 1 LSB off the exact product
    assert np.abs(y.astype(np.float64) - ref).max() <= 1


def test_exact_ties_differ_by_at_most_one():
    x = np.arange(-1001, 1001, dtype=np.int32)
    m0, shift = quantize_multiplier(0.5)
    y = multiply_by_quantized_multiplier(x, m0, shift)
    assert np.abs(y - _round_half_away(x * 0.5)).max() <= 1
    assert y[x == 3][0] == 2 and y[x == 4][0] == 2


def test_srdhm_matches_definition_and_saturates():
    rng = np.random.default_rng(1)
    a = rng.integers(INT32_MIN, INT32_MAX, size=5000, dtype=np.int64).astype(np.int32)
    b = int(rng.integers(2**30, 2**31))
    out = saturating_rounding_doubling_high_mul(a, b)
    assert out.dtype == np.int32
    ref = _round_half_away(a.astype(np.float64) * b / 2.0**31)
    assert np.abs(out - ref).max() <= 1
    sat = saturating_rounding_doubling_high_mul(np.array([INT32_MIN], dtype=np.int32), INT32_MIN)
    assert sat[0] == INT32_MAX
    with pytest.raises(TypeError):
        saturating_rounding_doubling_high_mul(np.array([1.0]), 3)


def test_rounding_divide_by_pot_rounds_half_away_from_zero():
    x = np.array([5, -5, 6, -6, 7, -7, 0, 1, -1], dtype=np.int32)
    assert rounding_divide_by_pot(x, 1).tolist() == [3, -3, 3, -3, 4, -4, 0, 1, -1]
    assert rounding_divide_by_pot(x, 0).tolist() == x.tolist()


def test_requantize_per_channel_zero_point_and_clamp():
    acc = np.array([[1000, -1000], [400000, 7]], dtype=np.int32)
    mults = [quantize_multiplier(v) for v in (0.01, 0.001)]
    m0 = np.array([mults[0][0], mults[1][0]])
    shift = np.array([mults[0][1], mults[1][1]])
    out = requantize(acc, m0, shift, zero_point=-128, qmin=-128, qmax=127)
    assert out.dtype == np.int32
    assert out.tolist() == [[-118, -129 + 1], [127, -128]]
