"""The results table: one row per model, printable, JSON-serialisable."""

from __future__ import annotations

import json
import os
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from shrink._atomic import atomic_write_bytes
from shrink.errors import FileFormatError
from shrink.report.format import (
    LEGEND,
    UNSTABLE_SPREAD,
    clean_note,
    fmt_bytes,
    fmt_count,
    fmt_delta,
    fmt_latency,
    fmt_metric,
    fmt_ratio,
    is_unstable,
)

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
    #: layer -> the runtime kernel that computes it ("QLinearConv (int8)"), for rows that run exported graphs
    kernels: dict[str, str] = field(default_factory=dict)


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

    @property
    def baseline(self) -> Row | None:
        """The row every other row is compared with: the first one (the recipe's original model)."""
        return self.rows[0] if self.rows else None

    def metric_keys(self) -> list[str]:
        return list(dict.fromkeys(k for r in self.rows for k in r.metrics))

    def batch_sizes(self) -> list[str]:
        return list(dict.fromkeys(b for r in self.rows for b in r.latency))

    def notes(self) -> list[str]:
        """Every row's notes as ``model: note``, prefixes not repeated, each once."""
        out = [f"{r.name}: {clean_note(n)}" for r in self.rows for n in r.notes]
        return list(dict.fromkeys(out))

    def unstable(self) -> list[tuple[str, str]]:
        """(model, batch size) of every latency whose spread exceeds the threshold."""
        return [(r.name, b) for r in self.rows for b, st in r.latency.items() if is_unstable(st)]

    def warnings(self) -> list[str]:
        """One line per batch size with unstable latencies, naming the models (or saying 'all N models')."""
        out = []
        for b in self.batch_sizes():
            names = [name for name, batch in self.unstable() if batch == b]
            if not names:
                continue
            measured = sum(b in r.latency for r in self.rows)
            who = f"all {measured} models" if len(names) == measured and measured > 2 else ", ".join(names)
            out.append(
                f"latency at batch {b} unstable (slowest round > {UNSTABLE_SPREAD:g}x the fastest) for {who}: "
                "the machine was busy; rerun on a quiet machine before comparing speeds"
            )
        return out

    def columns(self) -> list[str]:
        metric_keys = self.metric_keys()
        return [
            "model",
            "runtime",
            "execution",
            *(c for k in metric_keys for c in (k, f"Δ {k}")),
            "size",
            "×smaller",
            "params",
            "nonzero",
            "MACs",
            *(c for b in self.batch_sizes() for c in (f"latency b{b} (ms)", f"×faster b{b}")),
        ]

    def cells(self) -> list[list[str]]:
        base = self.baseline
        out = []
        for r in self.rows:
            metrics = [
                c
                for k in self.metric_keys()
                for c in (
                    fmt_metric(r.metrics.get(k)),
                    fmt_delta(r.metrics.get(k), base.metrics.get(k) if base else None),
                )
            ]
            latency = []
            for b in self.batch_sizes():
                base_ms = base.latency.get(b, {}).get("median_ms") if base else None
                ratio = fmt_ratio(base_ms, r.latency.get(b, {}).get("median_ms"))
                shaky = any(is_unstable(x.latency.get(b, {})) for x in (r, base) if x is not None)
                latency += [fmt_latency(r.latency.get(b)), ratio + " !" if shaky and ratio != "-" else ratio]
            out.append(
                [
                    r.name,
                    r.runtime,
                    r.execution,
                    *metrics,
                    fmt_bytes(r.size_bytes),
                    fmt_ratio(base.size_bytes if base else None, r.size_bytes),
                    fmt_count(r.params),
                    fmt_count(r.nonzero_params),
                    fmt_count(r.macs),
                    *latency,
                ]
            )
        return out

    def render(self, width: int | None = None) -> str:
        """The table as text. ``width=None`` (a file or a pipe): plain columns without box drawing; a terminal
        ``width``: a boxed table if it fits, else one block per model. Legend, warnings and notes follow."""
        if width is None:
            text = self.title + "\n\n" + _aligned(self.columns(), self.cells())
        else:
            text = _boxed(self, width) or _blocks(self.columns(), self.cells(), self.title)
        tail = textwrap.wrap(LEGEND, width=min(width or 100, 100))
        tail += [f"warning: {w}" for w in self.warnings()]
        notes = self.notes()
        if notes:
            tail += ["notes:", *(f"  {n}" for n in notes)]
        return text.rstrip("\n") + "\n\n" + "\n".join(tail) + "\n"

    def __str__(self) -> str:
        return self.render()


def _aligned(columns: list[str], cells: list[list[str]]) -> str:
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines) + "\n"


def _boxed(report: Report, width: int) -> str | None:
    """A rich table at its natural width, or None when that is wider than ``width``."""
    table = Table(title=report.title)
    for c in report.columns():
        table.add_column(c, no_wrap=True)
    for cells in report.cells():
        table.add_row(*cells)
    console = Console(width=10_000, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    if console.measure(table).maximum > width:
        return None
    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(table)
    return console.export_text()


def _blocks(columns: list[str], cells: list[list[str]], title: str) -> str:
    """One block per model (``name`` then ``column: value`` lines): reads on a narrow terminal."""
    pad = max(len(c) for c in columns[1:])
    lines = [title, ""]
    for row in cells:
        lines.append(row[0])
        lines += [f"  {c.ljust(pad)}  {v}" for c, v in zip(columns[1:], row[1:], strict=True) if v != "-"]
        lines.append("")
    return "\n".join(lines)
