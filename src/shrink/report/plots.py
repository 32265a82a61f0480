"""The report's plots: quality against size on disk and against latency at every measured batch size.

Every model is a numbered point (the number is its row in the table), one colour per model, a filled circle for
real execution and a hollow triangle for simulated (fake-quant) figures. Quality is drawn as the error (100 -
accuracy, or 1 - fidelity) on a log axis with better up, so that a cluster near 99% spreads out and one poor model
does not squash the rest; sizes and latencies are on log axes. Number labels are placed where they overlap no
other label or point.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from shrink.report.format import is_unstable  # noqa: E402
from shrink.report.table import Report, Row  # noqa: E402

__all__ = ["report_png", "is_simulated", "colour", "quality_error"]

#: label offsets (points) tried in order: close around the marker first, then further out
_OFFSETS = [
    (round(r * dx) - (8 if dx < 0 else 0), round(r * dy) - (8 if dy < 0 else 0))
    for r in (7, 12, 18, 26)
    for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1.3, 0), (-1.6, 0), (0, 1.3), (0, -1.6))
] + [(-60, 6), (-60, -12), (-110, 6), (-110, -12), (-160, 6)]  # long labels near the right edge


def is_simulated(row: Row) -> bool:
    """Whether the row's figures come from simulated execution (fake-quant / unpacked bits), not real kernels."""
    text = row.execution.lower()
    return "simulated" in text or "fake" in text


def colour(index: int) -> tuple[float, float, float, float]:
    """Distinct colours for up to 40 models (tab20, then tab20b)."""
    cmap = plt.get_cmap("tab20") if index < 20 else plt.get_cmap("tab20b")
    i = index % 20
    return cmap((i % 10) * 2 / 20 + (i // 10) / 20)  # the strong shade of each hue first, then the light ones


def quality_error(row: Row, metric: str) -> float | None:
    """The error the plots show: 100 - accuracy (%), 1 - a fidelity in [0, 1], or perplexity / mean squared error
    itself."""
    value = row.metrics.get(metric)
    if value is None or not math.isfinite(value):
        return None
    if metric in ("perplexity", "mse"):
        return value
    return (100.0 - value) if value > 1.0 or metric == "accuracy" else (1.0 - value)


@dataclass
class _Point:
    number: int
    row: Row
    x: float
    y: float
    xerr: tuple[float, float] | None = None
    unstable: bool = False


@dataclass(frozen=True)
class _YRange:
    """The error axis: the models' range, with far-off models (errors over 4x the median) drawn on its edge."""

    top: float  # best (smallest error), drawn at the top
    bottom: float  # worst shown
    edge: float  # where off-scale models are drawn

    @classmethod
    def of(cls, errors: list[float], floor: float) -> _YRange:
        values = sorted(max(e, floor) for e in errors)
        limit = 4 * values[len(values) // 2]
        shown = [v for v in values if v <= limit] or values
        worst = shown[-1] * (1.6 if len(shown) < len(values) else 1.25)
        return cls(top=values[0] / 1.25, bottom=max(worst, values[0] * 1.5), edge=shown[-1] * 1.4)

    def place(self, error: float, floor: float) -> tuple[float, bool]:
        y = max(error, floor)
        return (self.edge, True) if y > self.bottom else (y, False)


def _scatter(ax: Axes, points: list[_Point], floor: float, yr: _YRange) -> list[tuple[str, float, float]]:
    """Draw the markers; returns (label, x, y) for the labels, placed once the layout is final."""
    labels = []
    for p in points:
        y, off_scale = yr.place(p.y, floor)
        c = colour(p.number - 1)
        if off_scale:  # below the axis: an arrow head at the edge, the real value in the label
            ax.scatter([p.x], [y], marker="v", s=80, color=c, zorder=3)
        elif is_simulated(p.row):
            ax.scatter([p.x], [y], marker="^", s=70, facecolors="none", edgecolors=[c], linewidths=1.8, zorder=3)
        else:
            ax.scatter([p.x], [y], marker="o", s=60, color=c, zorder=3)
        if p.xerr is not None:
            ax.errorbar([p.x], [y], xerr=[[p.xerr[0]], [p.xerr[1]]], fmt="none", ecolor=c, alpha=0.5)
        if p.unstable:
            ax.scatter([p.x], [y], marker="o", s=230, facecolors="none", edgecolors="red", linewidths=1.2, zorder=2)
        labels.append((f"{p.number} (error {p.y:.3g}, off scale)" if off_scale else str(p.number), p.x, y))
    return labels


def _label(ax: Axes, points: list[tuple[str, float, float]]) -> None:
    """Label each point at the first offset whose box stays inside the axes and overlaps no placed label and no
    marker; points drawn on the same spot (within 4 pixels) share one label, e.g. ``3,4,5``."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    dots = [ax.transData.transform((x, y)) for _, x, y in points]
    groups: list[tuple[list[str], float, float, tuple[float, float]]] = []
    for (label, x, y), d in zip(points, dots, strict=True):
        same = next((g for g in groups if abs(g[3][0] - d[0]) <= 4 and abs(g[3][1] - d[1]) <= 4), None)
        if same is None:
            groups.append(([label], x, y, (d[0], d[1])))
        else:
            same[0].append(label)
    frame = ax.get_window_extent(renderer)
    placed: list = []
    for labels, x, y, _ in groups:
        best: tuple[float, Any] | None = None
        for dx, dy in _OFFSETS:
            text = ax.annotate(",".join(labels), (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8)
            box = text.get_window_extent(renderer)
            outside = box.x0 < frame.x0 or box.x1 > frame.x1 or box.y0 < frame.y0 or box.y1 > frame.y1
            cost = 100 * sum(box.padded(1).overlaps(b) for b in placed) + 10 * outside
            cost += sum(box.padded(5).contains(*d) for d in dots) + (abs(dx) + abs(dy)) / 1000  # nearer is better
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, text)
            else:
                text.remove()
            if cost < 1:
                break
        assert best is not None
        placed.append(best[1].get_window_extent(renderer))


def _plain(value: float, _pos: int) -> str:
    return f"{value:g}"


def _axes(ax: Axes, xlabel: str, ylabel: str, title: str, yr: _YRange, xs: list[float]) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(yr.bottom, yr.top)  # inverted: lower error is better, better is up
    if xs:  # limits from the medians: a wild min-max bar must not squash the others
        ax.set_xlim(min(xs) / 1.35, max(xs) * 1.35)
    for axis, subs in ((ax.xaxis, (1.0, 2.0, 5.0)), (ax.yaxis, (1.0, 1.5, 2.0, 3.0, 5.0, 7.0))):
        axis.set_major_locator(LogLocator(subs=subs))
        axis.set_major_formatter(FuncFormatter(_plain))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)


_UNSTABLE_HANDLE = Line2D(
    [],
    [],
    linestyle="none",
    marker="o",
    markersize=11,
    markerfacecolor="none",
    markeredgecolor="red",
    label="unstable latency (slowest > 1.5x fastest)",
)


def _legend_handles(report: Report) -> list[Line2D]:
    handles = []
    for i, row in enumerate(report.rows):
        sim = is_simulated(row)
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="^" if sim else "o",
                markersize=7,
                markerfacecolor="none" if sim else colour(i),
                markeredgecolor=colour(i),
                label=f"{i + 1}  {row.name}" + ("  (simulated)" if sim else ""),
            )
        )
    return handles


def _latency_points(report: Report, errors: dict[int, float | None], batch: str) -> list[_Point]:
    pts = []
    for i, r in enumerate(report.rows):
        st, e = r.latency.get(batch), errors[i]
        if st is None or e is None:
            continue
        med = st["median_ms"]
        xerr = (max(med - st["min_ms"], 0.0), max(st["max_ms"] - med, 0.0))
        pts.append(_Point(i + 1, r, med, e, xerr, is_unstable(st)))
    return pts


def report_png(report: Report, metric: str) -> bytes | None:
    """All plots of ``report`` in one PNG (None when no row has ``metric``)."""
    errors = {i: quality_error(r, metric) for i, r in enumerate(report.rows)}
    if all(e is None for e in errors.values()):
        return None
    positive = [e for e in errors.values() if e is not None and e > 0]
    floor = min(positive) / 2 if positive else 1e-3  # a perfect model still gets a place on the log axis
    unit = {"accuracy": "test error (%)", "perplexity": "perplexity", "mse": "mean squared error"}.get(
        metric, f"1 - {metric}"
    )
    ylabel = f"{unit}, log scale (better ↑)"
    batches = report.batch_sizes()
    panels = 1 + len(batches)
    handles = _legend_handles(report)
    if any(is_unstable(st) for r in report.rows for st in r.latency.values()):
        handles.append(_UNSTABLE_HANDLE)
    ncol = max(1, min(panels * 2, math.ceil(len(handles) / 6)))
    legend_rows = math.ceil(len(handles) / ncol)
    height = 4.4 + 0.19 * legend_rows
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, height), dpi=100, squeeze=False)
    yr = _YRange.of([e for e in errors.values() if e is not None], floor)
    labels: list[tuple[Axes, list[tuple[str, float, float]]]] = []
    size_pts = [
        _Point(i + 1, r, r.size_bytes / 1024, e) for i, r in enumerate(report.rows) if (e := errors[i]) is not None
    ]
    ax = axes[0][0]
    _axes(ax, "size on disk (KiB, log scale)", ylabel, f"{metric} vs size", yr, [p.x for p in size_pts])
    labels.append((ax, _scatter(ax, size_pts, floor, yr)))
    for ax, b in zip(axes[0][1:], batches, strict=True):
        pts = _latency_points(report, errors, b)
        xlabel = f"median latency, batch {b} (ms per batch, log scale)"
        _axes(ax, xlabel, ylabel, f"{metric} vs latency, batch {b}", yr, [p.x for p in pts])
        labels.append((ax, _scatter(ax, pts, floor, yr)))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, (0.19 * legend_rows + 0.15) / height, 1, 1))
    for ax, points in labels:
        _label(ax, points)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
