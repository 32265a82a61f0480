"""The results table: one row per model, printable, JSON-serialisable."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from shrink.errors import FileFormatError
from shrink.export.artifact import atomic_write_bytes

__all__ = ["Row", "Report"]


@dataclass
class Row:
    name: str
    runtime: str  # "torch eager", "onnxruntime"
    execution: str  # "fp32", "int8 (real, integer kernels)", "fake-quant (simulated)", ...
    metrics: dict[str, float]
    params: int | None
    nonzero_params: int | None
    size_bytes: int
    macs: int | None
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)  # batch size -> LatencyStats.to_dict()
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    rows: list[Row]
    metric: str
    machine: dict[str, Any] = field(default_factory=dict)
    title: str = "shrink report"

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no row named {name!r} (rows: {[r.name for r in self.rows]})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "metric": self.metric,
            "machine": self.machine,
            "rows": [asdict(r) for r in self.rows],
        }

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=2).encode())
        return Path(path)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> Report:
        """Read a report.json; a malformed file raises FileFormatError naming the file and the problem."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls.from_dict(data)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FileFormatError(f"{path}: not a valid shrink report ({type(exc).__name__}: {exc})") from None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        return cls(
            rows=[Row(**r) for r in data["rows"]],
            metric=data["metric"],
            machine=data.get("machine", {}),
            title=data.get("title", "shrink report"),
        )

    def columns(self) -> list[str]:
        metric_keys = list(dict.fromkeys(k for r in self.rows for k in r.metrics))
        batches = list(dict.fromkeys(b for r in self.rows for b in r.latency))
        return [
            "model",
            "runtime",
            "execution",
            *metric_keys,
            "params",
            "nonzero",
            "size",
            "MACs",
            *(f"latency b{b} (ms)" for b in batches),
        ]

    def cells(self) -> list[list[str]]:
        metric_keys = list(dict.fromkeys(k for r in self.rows for k in r.metrics))
        batches = list(dict.fromkeys(b for r in self.rows for b in r.latency))
        out = []
        for r in self.rows:
            lat = [
                f"{r.latency[b]['median_ms']:.3f} [{r.latency[b]['min_ms']:.3f}-{r.latency[b]['max_ms']:.3f}]"
                if b in r.latency
                else "-"
                for b in batches
            ]
            out.append(
                [
                    r.name,
                    r.runtime,
                    r.execution,
                    *(_fmt(r.metrics.get(k)) for k in metric_keys),
                    _count(r.params),
                    _count(r.nonzero_params),
                    _bytes(r.size_bytes),
                    _count(r.macs),
                    *lat,
                ]
            )
        return out

    def render(self, width: int = 200) -> str:
        table = Table(title=self.title)
        for c in self.columns():
            table.add_column(c, overflow="fold")
        for cells in self.cells():
            table.add_row(*cells)
        console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
        console.print(table)
        notes = [f"{r.name}: {n}" for r in self.rows for n in r.notes]
        text = console.export_text()
        return text + ("\n".join(notes) + "\n" if notes else "")

    def __str__(self) -> str:
        return self.render()


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}" if abs(v) < 2 else f"{v:.2f}"


def _count(v: int | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e4 else str(v)


def _bytes(v: int) -> str:
    return f"{v / 2**20:.2f} MiB" if v >= 2**20 else f"{v / 2**10:.1f} KiB"
