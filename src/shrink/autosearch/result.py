"""What a compression search found: every candidate point, predicted or measured, its Pareto front and plots."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shrink._atomic import atomic_write_bytes
from shrink.hw.policy import policy_from_dict
from shrink.report.html import scatter_png

__all__ = ["Point", "SearchResult", "pareto_front"]


@dataclass
class Point:
    """A candidate policy: predicted cost and loss always; the measured metric only if it was measured, and the
    measured cost (seconds, end to end on the profile's runtime) only if it was timed."""

    label: str
    policy: dict[str, dict[str, Any]]
    predicted_cost: float
    predicted_loss: float
    measured_metric: float | None = None
    model: Any = field(default=None, repr=False, compare=False)
    measured_cost: float | None = None

    @property
    def measured(self) -> bool:
        return self.measured_metric is not None

    def summary(self) -> str:
        return ", ".join(f"{n}={c.label()}" for n, c in policy_from_dict(self.policy).items()) or "fp32"

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "policy": self.policy,
            "predicted_cost": self.predicted_cost,
            "predicted_loss": self.predicted_loss,
            "measured_metric": self.measured_metric,
            "measured": self.measured,
            "measured_cost": self.measured_cost,
        }


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost (lower) and metric (higher)."""
    front = []
    for i, (c, m) in enumerate(points):
        dominated = any((c2 <= c and m2 >= m) and (c2 < c or m2 > m) for j, (c2, m2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


@dataclass
class SearchResult:
    points: list[Point]
    baseline_metric: float
    tolerance: float
    objective: str
    profile: str
    best: str | None
    baseline_cost: float

    def point(self, label: str) -> Point:
        return next(p for p in self.points if p.label == label)

    def measured_front(self) -> list[Point]:
        measured = [p for p in self.points if p.measured]
        idx = pareto_front([(p.predicted_cost, p.measured_metric or 0.0) for p in measured])
        return [measured[i] for i in idx]

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "profile": self.profile,
            "tolerance": self.tolerance,
            "baseline_metric": self.baseline_metric,
            "baseline_cost": self.baseline_cost,
            "best": self.best,
            "pareto_front": [p.label for p in self.measured_front()],
            "points": [p.to_dict() for p in self.points],
        }

    def pareto_png(self) -> bytes:
        """Measured metric vs predicted cost: measured points (front marked *) and the fp32 baseline."""
        front = {p.label for p in self.measured_front()}
        pts = [("fp32", self.baseline_cost, self.baseline_metric)]
        pts += [
            (
                p.label + ("*" if p.label in front else "") + (" (chosen)" if p.label == self.best else ""),
                p.predicted_cost,
                p.measured_metric,
            )
            for p in self.points
            if p.measured_metric is not None
        ]
        return scatter_png(pts, f"predicted {self.objective} on {self.profile}", "measured validation metric")

    def prediction_png(self) -> bytes:
        """Predicted loss vs predicted cost for every candidate, labelled measured (M) or predicted only (P)."""
        pts = [(f"{p.label} {'M' if p.measured else 'P'}", p.predicted_cost, p.predicted_loss) for p in self.points]
        return scatter_png(pts, f"predicted {self.objective} on {self.profile}", "predicted loss (output KL)")

    def write(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "search.json", json.dumps(self.to_dict(), indent=2).encode())
        atomic_write_bytes(out / "search_pareto.png", self.pareto_png())
        atomic_write_bytes(out / "search_predicted.png", self.prediction_png())
        return [out / "search.json", out / "search_pareto.png", out / "search_predicted.png"]
