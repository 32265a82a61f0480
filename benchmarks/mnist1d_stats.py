"""Seed statistics and the MNIST-1D targets, fixed in code before any run: mean ± standard deviation, 95% t-intervals,
paired comparisons, and the verdict rules ("better" only where the interval says so)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

__all__ = [
    "Interval",
    "interval",
    "paired",
    "verdict",
    "paper_target_met",
    "kd_target_met",
    "drop_target_met",
    "PAPER_TOLERANCE",
    "MAX_DROP",
]

#: issue 16: each baseline's mean test accuracy within this many points of the paper's figure
PAPER_TOLERANCE = 3.0
#: issue 16: pruning (unstructured 90%, channels 50%, each with fine-tuning) may cost at most this many points
MAX_DROP = 1.0


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` seeds with its standard deviation and 95% Student-t confidence interval."""

    mean: float
    std: float
    low: float
    high: float
    n: int

    def text(self) -> str:
        return f"{self.mean:.2f} ± {(self.high - self.low) / 2:.2f}"


def interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean ± the t-interval half-width of ``values`` (at least two)."""
    if len(values) < 2:
        raise ValueError(f"an interval needs at least 2 values, got {len(values)}")
    mean, std = statistics.mean(values), statistics.stdev(values)
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1)) * std / math.sqrt(len(values))
    return Interval(mean, std, mean - half, mean + half, len(values))


def paired(a: Sequence[float], b: Sequence[float]) -> tuple[Interval, float]:
    """The interval of the per-seed differences ``a - b`` and the paired t-test's two-sided p-value."""
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs equal seed counts, got {len(a)} and {len(b)}")
    diff = [x - y for x, y in zip(a, b, strict=True)]
    if statistics.pstdev(diff) == 0.0:  # identical on every seed, or a constant shift: the t-test is undefined
        return interval(diff), (1.0 if diff[0] == 0.0 else 0.0)
    return interval(diff), float(stats.ttest_rel(a, b).pvalue)


def verdict(a: Sequence[float], b: Sequence[float]) -> str:
    """ "better" / "worse" when the 95% interval of the paired differences ``a - b`` excludes zero, else "no
    difference shown"."""
    diff, _ = paired(a, b)
    if diff.low > 0:
        return "better"
    if diff.high < 0:
        return "worse"
    return "no difference shown"


def paper_target_met(accuracies: Sequence[float], reported: float, tolerance: float = PAPER_TOLERANCE) -> bool:
    """The mean over seeds is within ``tolerance`` points of the paper's reported accuracy."""
    return abs(statistics.mean(accuracies) - reported) <= tolerance


def kd_target_met(kd: Sequence[float], hard: Sequence[float]) -> bool:
    """KD beats hard labels by more than the seed noise: the paired t-test gives p < 0.05 with KD ahead on average,
    or KD's 95% interval lies wholly above the hard-label interval."""
    _, p = paired(kd, hard)
    ahead = statistics.mean(kd) > statistics.mean(hard)
    return ahead and (p < 0.05 or interval(kd).low > interval(hard).high)


def drop_target_met(base: Sequence[float], compressed: Sequence[float], max_drop: float = MAX_DROP) -> bool:
    """The mean per-seed drop (base - compressed, same seed) is at most ``max_drop`` points."""
    return statistics.mean(x - y for x, y in zip(base, compressed, strict=True)) <= max_drop
