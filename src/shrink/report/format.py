"""Cells of the results table: numbers, sizes, latencies, comparisons with the baseline, and clean notes."""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "UNSTABLE_SPREAD",
    "LEGEND",
    "fmt_metric",
    "fmt_delta",
    "fmt_count",
    "fmt_bytes",
    "fmt_ratio",
    "fmt_latency",
    "is_unstable",
    "clean_note",
]

#: a latency whose slowest round took more than this multiple of its fastest is flagged (as eval.latency does)
UNSTABLE_SPREAD = 1.5

LEGEND = (
    "latency: median [fastest–slowest] of the timed rounds, in ms per batch; '!' = unstable (slowest > "
    f"{UNSTABLE_SPREAD:g}x fastest: the machine was busy, compare with care). Δ: change of the metric vs the "
    "baseline (first row), in points; ×smaller: baseline size / this size on disk; ×faster: baseline latency / "
    "this latency at the same batch size ('!': one of the two is unstable)."
)


def fmt_metric(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}" if abs(v) < 2 else f"{v:.2f}"


def fmt_delta(v: float | None, base: float | None) -> str:
    if v is None or base is None:
        return "-"
    d = v - base
    return f"{d:+.4f}" if abs(base) < 2 else f"{d:+.2f}"


def fmt_count(v: int | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e4 else str(v)


def fmt_bytes(v: int) -> str:
    return f"{v / 2**20:.2f} MiB" if v >= 2**20 else f"{v / 2**10:.1f} KiB"


def fmt_ratio(base: float | None, value: float | None) -> str:
    """``base / value`` as ``×2.50``; '-' where either is missing or zero."""
    if not base or not value:
        return "-"
    r = base / value
    return f"×{r:.1f}" if r >= 10 else f"×{r:.2f}"


def is_unstable(stats: dict[str, Any]) -> bool:
    """The harness's own flag where it set one, else slowest / fastest > :data:`UNSTABLE_SPREAD`."""
    if "unstable" in stats:
        return bool(stats["unstable"])
    lo, hi = stats.get("min_ms") or 0.0, stats.get("max_ms") or 0.0
    return lo > 0 and hi / lo > UNSTABLE_SPREAD


def fmt_latency(stats: dict[str, Any] | None) -> str:
    if stats is None:
        return "-"
    text = f"{stats['median_ms']:.3f} [{stats['min_ms']:.3f}–{stats['max_ms']:.3f}]"
    return text + " !" if is_unstable(stats) else text


_PREFIX = re.compile(r"^([\w() .-]{1,40}): \1: ")


def clean_note(note: str) -> str:
    """``"int8_static: int8_static: x"`` → ``"int8_static: x"`` (a prefix added by two layers of code)."""
    while (m := _PREFIX.match(note)) is not None:
        note = note[len(m.group(1)) + 2 :]
    return note
