"""Latency with warm-up, repetitions, medians and spread, thread count and batch size recorded."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from shrink.errors import ConfigError

__all__ = [
    "LatencyStats",
    "UNSTABLE_SPREAD",
    "measure_latency",
    "interleaved_latency",
    "interleaved_stats",
    "repeat_batch",
    "batch_axis_of",
]


@dataclass(frozen=True)
class LatencyStats:
    median_ms: float
    min_ms: float
    max_ms: float
    reps: int
    warmup: int
    threads: int
    batch_size: int

    @property
    def spread(self) -> float:
        """Slowest over fastest measurement."""
        return self.max_ms / self.min_ms if self.min_ms > 0 else math.inf

    @property
    def unstable(self) -> bool:
        """Whether the slowest measurement took more than :data:`UNSTABLE_SPREAD` times the fastest."""
        return self.spread > UNSTABLE_SPREAD

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"unstable": self.unstable}


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


#: a latency whose slowest round took more than this multiple of its fastest is flagged unstable
UNSTABLE_SPREAD = 1.5


def interleaved_latency(
    fns: Sequence[Callable[[], Any]],
    *,
    threads: int = 2,
    rounds: int = 15,
    calls: int = 15,
    warmup: int = 2,
    block_s: float = 0.02,
) -> list[float]:
    """Latency (ms) of each of ``fns``, all timed together so that they can be compared with each other: the
    medians of :func:`interleaved_stats` (see there)."""
    stats = interleaved_stats(fns, threads=threads, rounds=rounds, calls=calls, warmup=warmup, block_s=block_s)
    return [s.median_ms for s in stats]


def interleaved_stats(
    fns: Sequence[Callable[[], Any]],
    *,
    threads: int = 2,
    rounds: int = 15,
    calls: int = 15,
    warmup: int = 2,
    block_s: float = 0.02,
    batch_size: int = 1,
) -> list[LatencyStats]:
    """Latency of each of ``fns``, all timed together so that they can be compared with each other.

    In each of ``rounds`` rounds every function runs ``warmup`` + n times back to back (the order reversed every
    other round) and its median call is kept; n is what fills about ``block_s`` seconds, between 3 and ``calls``.
    On a shared machine whole stretches of time run 10-30% slower and single calls stall for a scheduler tick, so a
    round's medians are divided by that round's geometric mean over all functions; each function's median is the
    median of its ratios over the rounds times the median round mean. Drift that hits every function alike
    cancels, which a median or minimum of separate runs does not achieve. ``min_ms`` / ``max_ms`` are the fastest
    and slowest round medians as measured (not normalized): their ratio is what :attr:`LatencyStats.unstable` reads.
    """
    if not fns:
        return []
    if rounds < 1 or calls < 1:
        raise ValueError(f"interleaved_latency: rounds and calls must be >= 1, got {rounds} and {calls}")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            counts = [_calls_per_block(fn, calls, block_s) for fn in fns]
            per_round = [_one_round(fns, counts, warmup, reverse=r % 2 == 1) for r in range(rounds)]
    finally:
        torch.set_num_threads(old)
    means = [math.exp(statistics.fmean(math.log(max(t, 1e-9)) for t in row)) for row in per_round]
    scale = statistics.median(means)
    out = []
    for i in range(len(fns)):
        raw = [row[i] for row in per_round]
        median = statistics.median(row[i] / m for row, m in zip(per_round, means, strict=True)) * scale
        out.append(LatencyStats(median, min(raw), max(raw), rounds * counts[i], warmup, threads, batch_size))
    return out


def _calls_per_block(fn: Callable[[], Any], calls: int, block_s: float) -> int:
    fn()
    t0 = time.perf_counter()
    fn()
    return max(min(calls, 3), min(calls, round(block_s / max(time.perf_counter() - t0, 1e-6))))


def _one_round(fns: Sequence[Callable[[], Any]], counts: list[int], warmup: int, reverse: bool) -> list[float]:
    order = range(len(fns) - 1, -1, -1) if reverse else range(len(fns))
    row = [0.0] * len(fns)
    for i in order:
        for _ in range(warmup):
            fns[i]()
        times = []
        for _ in range(counts[i]):
            t0 = time.perf_counter()
            fns[i]()
            times.append((time.perf_counter() - t0) * 1e3)
        row[i] = statistics.median(times)
    return row


def batch_axis_of(x: torch.Tensor, axis: int) -> int:
    """The axis of ``x`` that :func:`repeat_batch` repeats: ``axis``, or 0 for a tensor of rank ``axis`` or less."""
    return axis if x.dim() > axis else 0


def repeat_batch(inputs: Any, batch_size: int, axis: int = 0) -> Any:
    """Make a batch of ``batch_size`` by repeating the first example of ``inputs`` (tensor, dict or tuple) along
    ``axis`` (1 for a time-major model's ``(time, batch, features)``; a tensor of rank ``axis`` or less, such as
    per-sample lengths, along axis 0, and every other tensor along ``axis``, so a time-major model's ``(batch,
    features)`` side input would be tiled along its features); a dict's plain values (flags such as
    ``use_cache=False``) are passed as they are."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"repeat_batch: batch_size must be an int >= 1, got {batch_size!r}")
    if isinstance(inputs, torch.Tensor):
        along = batch_axis_of(inputs, axis)
        reps = [1] * inputs.dim()
        reps[along] = batch_size
        return inputs.narrow(along, 0, 1).repeat(*reps)
    if isinstance(inputs, dict):
        plain = (bool, int, float, str, type(None))
        return {k: v if isinstance(v, plain) else repeat_batch(v, batch_size, axis) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(repeat_batch(v, batch_size, axis) for v in inputs)
    raise TypeError(f"cannot build a batch from {type(inputs).__name__}")
