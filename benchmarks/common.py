"""Shared pieces of the benchmark sections: tables, targets, timing, peak memory, plots.

A section is a module in ``benchmarks/`` with ``TITLE`` and ``run(quick: bool) -> Section``; ``benchmarks/run.py``
lists the sections in order. Every figure in a section comes from measurements made in the same run.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shrink.eval.latency import LatencyStats, measure_latency

__all__ = [
    "minilm_calibration",
    "Built",
    "Table",
    "Target",
    "Fact",
    "Section",
    "latency",
    "fmt_ms",
    "run_measured",
    "ort_quantize_static",
    "save_png",
    "IMG_DIR",
    "THREADS",
]

IMG_DIR = Path(__file__).resolve().parent.parent / "docs" / "img"
THREADS = 2


@dataclass
class Built:
    """One model ready to measure: how to run it, its real file size, compression time, what runs, compile time."""

    run: Callable[[Any], Any]
    size_bytes: int
    seconds: float
    execution: str
    compile_seconds: float = 0.0  # torch.compile time of a compiled row, apart from ``seconds``
    #: compile time in a new process with Inductor's on-disk cache warm from the first compile (compiled rows)
    recompile_seconds: float | None = None


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""

    def add(self, *cells: Any) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.title}: {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))

    def markdown(self) -> str:
        def cell(v: Any) -> str:
            if isinstance(v, float):
                return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
            return str(v).replace("|", "\\|").replace("\n", " ")

        lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)


@dataclass
class Target:
    """A target from an issue, read off this run: what was asked, what was measured, met or not."""

    issue: int
    name: str
    goal: str
    measured: str
    met: bool | None  # None: n/a, nothing in this run could meet or miss it (e.g. no peer row qualified)

    @property
    def verdict(self) -> str:
        return "n/a" if self.met is None else ("yes" if self.met else "**no**")


@dataclass
class Fact:
    """Something this run shows that cannot fail (a theorem, a setting that was applied, a figure reported for
    information): listed apart from the targets."""

    issue: int
    name: str
    value: str


@dataclass
class Section:
    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # paths relative to docs/
    targets: list[Target] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    seconds: float = 0.0


def latency(fn: Callable[[], Any], batch_size: int, reps: int = 30, warmup: int = 5) -> LatencyStats:
    """Median latency of ``fn()`` with the benchmark thread count (also for ONNX Runtime sessions built with it)."""
    return measure_latency(fn, batch_size=batch_size, threads=THREADS, reps=reps, warmup=warmup, min_time_s=0.5)


def fmt_ms(stats: LatencyStats) -> str:
    return f"{stats.median_ms:.3f} ({stats.min_ms:.3f}–{stats.max_ms:.3f})"


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_measured(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Run ``fn()``; return ``(result, wall seconds, peak resident memory in MiB above the starting RSS)``,
    sampled every 5 ms in a background thread."""
    start_rss, peak, done = _rss_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    torch.set_num_threads(THREADS)
    t0 = time.perf_counter()
    try:
        result = fn()
    finally:
        wall = time.perf_counter() - t0
        done.set()
        t.join()
    return result, wall, max(peak[0] - start_rss, 0.0)


def ort_quantize_static(fp32: Path, out: Path, feeds: list[dict[str, Any]], **options: Any) -> float:
    """ONNX Runtime's ``quantize_static`` in QDQ form with per-channel s8 weights and u8 activations (the documented
    CPU setting), calibrated on ``feeds`` (input name -> array); ``options`` add to or override those arguments.
    Returns the wall seconds it took."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self):  # noqa: ANN202
            return next(self.it, None)

    args: dict[str, Any] = {
        "quant_format": QuantFormat.QDQ,
        "per_channel": True,
        "activation_type": QuantType.QUInt8,
        "weight_type": QuantType.QInt8,
    }
    t = time.perf_counter()
    quantize_static(str(fp32), str(out), Reader(), **(args | options))
    return time.perf_counter() - t


def minilm_calibration(data: Any) -> str:
    """What MiniLM's calibration split holds (``minilm_data``'s defaults), for table notes: its sentences and where
    they come from. Raises ValueError for a split built with other counts, rather than describing it wrongly."""
    from shrink.zoo.minilm import CORPUS_CALIBRATION, EXTRA_CALIBRATION, GENERATED_CALIBRATION

    n = sum(len(batch["input_ids"]) for batch in data.calibration)
    if n != CORPUS_CALIBRATION + EXTRA_CALIBRATION + GENERATED_CALIBRATION:
        raise ValueError(f"minilm_calibration: {n} calibration sentences, not minilm_data's default split")
    return (
        f"{n} sentences, none of them scored: {CORPUS_CALIBRATION} of the corpus, {EXTRA_CALIBRATION} English "
        f"sentences from the docstrings of Python's standard library and {GENERATED_CALIBRATION} that "
        "SmolLM2-135M-Instruct wrote when asked for one sentence (shipped with shrink)"
    )


def save_png(png: bytes, name: str) -> str:
    """Write a PNG under docs/img and return its path relative to docs/."""
    IMG_DIR.mkdir(parents=True, exist_ok=True)
    (IMG_DIR / name).write_bytes(png)
    return os.path.join("img", name)
