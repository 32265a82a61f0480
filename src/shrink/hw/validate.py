"""Check the measured CPU profile against reality: realize a policy as the model that really runs (ONNX Runtime,
int8 QDQ kernels for layers at <= 8 bits), time it end to end, and compare with the table's prediction."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shrink.eval.latency import LatencyStats, measure_latency
from shrink.hw.estimate import RankCorrelation, estimate, rank_correlation
from shrink.hw.measured import LatencyTable
from shrink.hw.ort_int8 import int8_session, int8_sessions
from shrink.hw.policy import Policy
from shrink.hw.profile import Profile, load_profile

__all__ = ["measure_policy_latency", "ProfileCheck", "check_profile"]


def measure_policy_latency(
    model: nn.Module,
    policy: Policy,
    example_inputs: torch.Tensor,
    calibration: list[torch.Tensor],
    *,
    threads: int = 2,
    reps: int = 30,
    min_time_s: float = 0.3,
) -> LatencyStats:
    """End-to-end ONNX Runtime latency of ``model`` with the policy's <= 8-bit layers on int8 kernels (the rest
    fp32; channel widths must already be applied to ``model``)."""
    int8 = [n for n, c in policy.items() if c.bits <= 8]
    with tempfile.TemporaryDirectory(prefix="shrink-hw-") as tmp:
        session = int8_session(model, tmp, example_inputs, calibration, int8, threads=threads)
    feeds = session.feeds(example_inputs)
    return measure_latency(
        lambda: session.run_numpy(feeds),
        batch_size=int(example_inputs.shape[0]),
        threads=threads,
        reps=reps,
        warmup=5,
        min_time_s=min_time_s,
    )


@dataclass(frozen=True)
class ProfileCheck:
    labels: list[str]
    predicted_s: list[float]
    measured_s: list[float]
    correlation: RankCorrelation


def check_profile(
    configs: Sequence[tuple[str, nn.Module, Policy]],
    example_inputs: Any,
    calibration: list[torch.Tensor],
    profile: str | Profile = "cpu",
    table: LatencyTable | None = None,
    threads: int | None = None,
) -> ProfileCheck:
    """Predicted (table) vs measured (end-to-end ONNX Runtime) latency for each ``(label, model, policy)``, and the
    Spearman rank correlation between them. Models carry their widths already; policies give the bit widths.
    All configurations are timed together, round-robin (:func:`shrink.hw.calibrate.interleaved_latency_ms`), so a
    change in machine load during the check shifts every measurement alike instead of reordering them."""
    from shrink.hw.calibrate import interleaved_latency_ms

    profile = load_profile(profile)
    threads = threads or (profile.measured.threads if profile.measured else 2)
    labels = [label for label, _, _ in configs]
    predicted = [estimate(m, profile, example_inputs, dict(p), table=table).latency_s for _, m, p in configs]
    sessions = int8_sessions(
        [(m, [n for n, c in p.items() if c.bits <= 8]) for _, m, p in configs], example_inputs, calibration, threads
    )
    measured = [ms / 1e3 for ms in interleaved_latency_ms(sessions, example_inputs, threads=threads)]
    return ProfileCheck(labels, predicted, measured, rank_correlation(predicted, measured))
