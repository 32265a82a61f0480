"""Latency with warm-up, repetitions, medians and spread, thread count and batch size recorded."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = ["LatencyStats", "measure_latency", "repeat_batch"]


@dataclass(frozen=True)
class LatencyStats:
    median_ms: float
    min_ms: float
    max_ms: float
    reps: int
    warmup: int
    threads: int
    batch_size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_latency(
    fn: Callable[[], Any],
    *,
    batch_size: int,
    threads: int = 2,
    warmup: int = 5,
    reps: int = 20,
    min_time_s: float = 0.0,
) -> LatencyStats:
    """Time ``fn()`` ``reps`` times after ``warmup`` calls with ``threads`` PyTorch threads; more reps are taken
    until ``min_time_s`` has elapsed."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                fn()
            times: list[float] = []
            start = time.perf_counter()
            while len(times) < reps or (time.perf_counter() - start) < min_time_s:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(old)
    return LatencyStats(statistics.median(times), min(times), max(times), len(times), warmup, threads, batch_size)


def repeat_batch(inputs: Any, batch_size: int) -> Any:
    """Make a batch of ``batch_size`` by repeating the first example of ``inputs`` (tensor, dict or tuple)."""
    if isinstance(inputs, torch.Tensor):
        return inputs[:1].repeat(batch_size, *([1] * (inputs.dim() - 1)))
    if isinstance(inputs, dict):
        return {k: repeat_batch(v, batch_size) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(repeat_batch(v, batch_size) for v in inputs)
    raise TypeError(f"cannot build a batch from {type(inputs).__name__}")
