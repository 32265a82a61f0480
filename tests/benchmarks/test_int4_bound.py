"""The int4 section's bound row: a Linear without its GEMM keeps the output shape and bias, and the int4 speed
targets quote the bound next to the measured ratio without it changing the verdict."""

import pytest
import torch
from benchmarks.baselines import AOT_BF16, EAGER
from benchmarks.quant_int4 import (
    BEST,
    BEST_PACKAGE,
    BEST_WIDENED,
    BEST_WIDENED_PACKAGE,
    BOUND,
    RTN,
    ElidedLinear,
    targets,
)
from torch import nn


@pytest.mark.parametrize(("n_in", "n_out"), [(8, 8), (8, 20), (24, 8)])
def test_elided_linear_keeps_shape_and_bias_and_has_no_weight(n_in: int, n_out: int) -> None:
    linear = nn.Linear(n_in, n_out)
    elided = ElidedLinear(linear)
    x = torch.randn(2, 3, n_in)
    y = elided(x)
    assert y.shape == linear(x).shape
    assert [n for n, _ in elided.named_parameters()] == ["bias"]
    width = min(n_in, n_out)
    torch.testing.assert_close(y[..., :width], x[..., :width] + linear.bias[:width])
    no_bias = ElidedLinear(nn.Linear(n_in, n_out, bias=False))
    assert no_bias(x).shape == y.shape and not list(no_bias.parameters())


def test_speed_targets_quote_the_bound_and_keep_their_verdict() -> None:
    fidelity = {BEST: {"cos_mean": 0.98, "nn_agreement": 87.0}}
    lat = {EAGER: {1: 5.0, 32: 40.0}, AOT_BF16: {1: 1.5, 32: 12.0}, BEST_PACKAGE: {1: 1.0, 32: 12.5}}
    without = {t.name: t for t in targets(fidelity, lat)}
    lat[BOUND] = {1: 1.2, 32: 6.0}  # faster at b32 than the float rows, 1.25x at b1
    with_bound = {t.name: t for t in targets(fidelity, lat)}
    b1 = next(n for n in with_bound if "b1, fastest" in n)
    b32 = next(n for n in with_bound if "b32, fastest" in n)
    assert with_bound[b1].met is True and f"{BOUND}: 1.25x" in with_bound[b1].measured  # 1.5 / 1.0 = 1.5x: met
    assert with_bound[b32].met is False and f"{BOUND}: 2.00x" in with_bound[b32].measured
    assert BOUND not in without[b1].measured
    assert all(with_bound[n].met == t.met for n, t in without.items())


def test_speed_targets_read_the_widened_rows_and_name_the_row() -> None:
    fidelity = {BEST: {"cos_mean": 0.98, "nn_agreement": 87.0}}
    lat = {AOT_BF16: {1: 3.0, 32: 50.0}, BEST: {1: 3.0, 32: 70.0}, BEST_WIDENED: {1: 1.8, 32: 24.0}}
    lat[BEST_WIDENED_PACKAGE] = {1: 1.5, 32: 26.0}
    got = {t.name: t for t in targets(fidelity, lat)}
    b1 = next(t for n, t in got.items() if "b1, fastest" in n)
    b32 = next(t for n, t in got.items() if "b32, fastest" in n)
    assert b1.met and b1.measured.startswith(f"2.00x ({BEST_WIDENED_PACKAGE} 1.50 ms")
    assert b32.met and b32.measured.startswith(f"2.08x ({BEST_WIDENED} 24.00 ms")


def test_beats_target_is_na_when_no_row_to_beat_ran() -> None:
    fidelity = {BEST: {"cos_mean": 0.98, "nn_agreement": 87.0}}
    beats = [t for t in targets(fidelity, {}) if "beats round-to-nearest" in t.name]
    assert len(beats) == 1 and beats[0].met is None and beats[0].verdict == "n/a"
    fidelity[RTN] = {"cos_mean": 0.95, "nn_agreement": 80.0}
    beats = [t for t in targets(fidelity, {}) if "beats round-to-nearest" in t.name]
    assert beats[0].met is True and f"{RTN}: 0.9500" in beats[0].measured
