"""The MNIST-1D targets, fixed before the run: a result exactly at the line is met, one that just misses is not,
and "better" needs an interval that excludes zero."""

import pytest
from benchmarks.mnist1d_stats import drop_target_met, interval, kd_target_met, paired, paper_target_met, verdict


def test_interval_is_the_t_interval():
    iv = interval([90.0, 91.0, 92.0])
    assert iv.mean == pytest.approx(91.0) and iv.std == pytest.approx(1.0)
    assert iv.high - iv.mean == pytest.approx(4.302653 / 3**0.5, rel=1e-5)  # t(0.975, 2 dof) * s / sqrt(n)
    with pytest.raises(ValueError, match="at least 2"):
        interval([1.0])


def test_paper_target_within_three_points():
    assert paper_target_met([91.0, 91.0, 91.0], 94.0)  # exactly 3 points below: met
    assert not paper_target_met([90.9, 91.0, 91.0], 94.0)  # mean 90.97: just misses
    assert not paper_target_met([97.1, 97.0, 97.0], 94.0)  # above by more than 3 misses too


def test_kd_target_needs_more_than_seed_noise():
    hard = [80.0, 82.0, 81.0, 83.0, 79.0]
    assert kd_target_met([81.0, 83.1, 81.9, 84.2, 80.1], hard)  # ~+1 on every seed: paired p < 0.05
    # ahead on average but not on every seed: paired p ~0.4, intervals overlap -> just misses
    assert not kd_target_met([82.5, 81.0, 81.5, 83.5, 79.0], hard)
    assert not kd_target_met([79.0, 81.0, 80.0, 82.0, 78.0], hard)  # consistently behind: never met
    _, p = paired([82.5, 81.0, 81.5, 83.5, 79.0], hard)
    assert 0.05 < p < 1.0


def test_drop_target_at_most_one_point():
    base = [92.0, 91.0, 93.0]
    assert drop_target_met(base, [91.0, 90.0, 92.0])  # exactly 1.0 point: met
    assert not drop_target_met(base, [91.0, 90.0, 91.9])  # mean drop 1.033: just misses
    assert drop_target_met(base, [92.5, 91.5, 93.5])  # a gain is fine


def test_verdict_only_where_the_interval_says_so():
    a = [90.0, 91.0, 92.0, 90.5, 91.5]
    assert verdict([x + 0.5 for x in a], a) == "better"  # same shift on every seed
    assert verdict(a, [x + 0.5 for x in a]) == "worse"
    assert verdict([90.6, 90.4, 92.8, 90.1, 91.7], a) == "no difference shown"  # mixed signs
    assert verdict(a, a) == "no difference shown"
