"""Observers: ranges, clipping behaviour, ACIQ closed form, errors."""

import math

import pytest
import torch

from shrink.errors import ConfigError, DataError
from shrink.quant import OBSERVERS, aciq_alpha, fake_quantize, make_observer


def test_aciq_alpha_matches_paper():
    # Banner et al. 2019, Laplace: 2.83b, 3.89b, 5.03b, 6.2b, 7.41b, 8.64b, 9.89b for 2..8 bits
    paper = {2: 2.83, 3: 3.89, 4: 5.03, 5: 6.2, 6: 7.41, 7: 8.64, 8: 9.89}
    for bits, alpha in paper.items():
        assert aciq_alpha(bits, "laplace") == pytest.approx(alpha, abs=0.02)
    # the optimum satisfies alpha = 3 * 4^M * e^{-alpha}
    a = aciq_alpha(4)
    assert a == pytest.approx(3 * 4**4 * math.exp(-a), rel=1e-3)
    # Gaussian: 1.71, 2.15, 2.55, 2.94, 3.29, 3.61, 3.92 sigma
    assert aciq_alpha(2, "gaussian") == pytest.approx(1.71, abs=0.02)
    assert aciq_alpha(4, "gaussian") == pytest.approx(2.55, abs=0.02)
    # one-sided (the reference code's "positive" tables): the two-sided value one bit up
    for bits, alpha in {2: 3.89, 4: 6.2, 8: 11.16}.items():
        assert aciq_alpha(bits, "laplace", one_sided=True) == pytest.approx(alpha, abs=0.02)
    assert aciq_alpha(8, "gaussian", one_sided=True) == pytest.approx(4.2, abs=0.02)


def test_minmax_and_moving_average():
    o = make_observer("minmax")
    o.update(torch.tensor([-1.0, 2.0]))
    o.update(torch.tensor([-3.0, 1.0]))
    assert [float(v) for v in o.bounds()] == [-3.0, 2.0]
    m = make_observer("moving_average", momentum=0.5)
    m.update(torch.tensor([-1.0, 2.0]))
    m.update(torch.tensor([-3.0, 4.0]))
    assert [float(v) for v in m.bounds()] == [-2.0, 3.0]


@pytest.mark.parametrize("kind", ["percentile", "mse", "entropy", "aciq_laplace", "aciq_gaussian"])
def test_clipping_observers_clip_outliers(kind):
    torch.manual_seed(0)
    x = torch.distributions.Laplace(0.0, 1.0).sample((60_000,))
    x[0] = 80.0  # one huge outlier
    bits = 4 if kind != "entropy" else 8
    o = make_observer(kind, bits)
    o.update(x)
    lo, hi = (float(v) for v in o.bounds())
    assert hi < 40.0 and lo < 0.0
    # clipping buys resolution: the bulk of the data (all but the outlier) is quantized better than by min-max
    mm = make_observer("minmax", bits)
    mm.update(x)
    err = (fake_quantize(x, o.qparams()) - x)[1:].pow(2).mean()
    err_mm = (fake_quantize(x, mm.qparams()) - x)[1:].pow(2).mean()
    assert err < err_mm


def test_aciq_laplace_clip_value():
    torch.manual_seed(0)
    x = torch.distributions.Laplace(0.0, 0.5).sample((400_000,))
    o = make_observer("aciq_laplace", 4)
    o.update(x)
    assert float(o.bounds()[1]) == pytest.approx(5.03 * 0.5, rel=0.03)


@pytest.mark.parametrize("zeros", [0.5, 0.9])
def test_aciq_one_sided_fits_the_positive_values(zeros):
    """After a ReLU: the exact zeros cost nothing on the unsigned grid, so however many there are, the clip is the
    one-sided alpha times the scale of the positive values."""
    torch.manual_seed(0)
    n = 400_000
    x = torch.distributions.Exponential(2.0).sample((n,))  # b = 0.5
    x[: int(zeros * n)] = 0.0
    for kind, bits, want in [("aciq_laplace", 4, 6.2 * 0.5), ("aciq_laplace", 8, 11.16 * 0.5)]:
        o = make_observer(kind, bits)
        o.update(x)
        lo, hi = (float(v) for v in o.bounds())
        assert lo == 0.0
        assert hi == pytest.approx(want, rel=0.03)
    g = make_observer("aciq_gaussian", 4)
    g.update(x)
    rms = float(x[x > 0].pow(2).mean().sqrt())
    assert float(g.bounds()[1]) == pytest.approx(aciq_alpha(4, "gaussian", one_sided=True) * rms, rel=0.01)


def test_mse_per_channel_weights():
    w = torch.randn(8, 256)
    w[0, 0] = 30.0
    o = make_observer("mse", 4, symmetric=True, axis=0)
    o.update(w)
    qp = o.qparams()
    assert qp.scale.shape == (8,)
    mm = make_observer("minmax", 4, symmetric=True, axis=0)
    mm.update(w)
    assert (fake_quantize(w, qp) - w).pow(2).mean() < (fake_quantize(w, mm.qparams()) - w).pow(2).mean()


def test_errors():
    for kind in OBSERVERS:
        with pytest.raises(DataError, match="saw no data"):
            make_observer(kind, name="conv1").qparams()
    with pytest.raises(DataError, match="conv1.*NaN"):
        make_observer("minmax", name="conv1").update(torch.tensor([float("inf")]))
    with pytest.raises(ConfigError, match="bit width"):
        make_observer("minmax", 12)
    with pytest.raises(ConfigError, match="unknown observer"):
        make_observer("magic")
    with pytest.raises(ConfigError, match="per-tensor"):
        make_observer("entropy", axis=0)
