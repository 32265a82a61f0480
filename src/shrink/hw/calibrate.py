"""Calibrate the measured CPU profile against a few end-to-end measurements of one model.

The latency table holds each layer's marginal time measured alone (:mod:`shrink.hw.measured`); an int8 entry is a
one-layer QDQ graph, so it already includes a QuantizeLinear on its input and a DequantizeLinear on its output. A
model adds what no layer entry holds: the session call and the non-layer ops (once per call), and the extra
Quantize/Dequantize work where int8 layers meet fp32 data. So an end-to-end latency is modelled as

    offset + sum(table ms of every layer at its precision) + per_kelem * boundary kelems

where *boundary kelems* counts (in thousands of elements) the tensors crossing an fp32/int8 boundary in execution
order (a chain: an int8 layer pays a Quantize on its input when the layer before it, or the model input, is fp32,
and a Dequantize on its output when the next layer, or the model output, is). The two non-negative coefficients
are fitted to end-to-end ONNX Runtime timings of the model in fp32, all int8, each layer alone int8 and each layer
alone fp32 (2 x layers + 2 points, timed interleaved) by least absolute deviations (a linear program): ONNX Runtime
rewrites the graph around an isolated int8 layer (layout changes, unfused pooling) and such a point can cost several
times the rest — a squared-error fit would bend the offset to it, the absolute one follows the majority.

Measured on the digits CNN, int8 layers in a chain do *not* shed the Quantize/Dequantize inside their table entries
(QDQ graphs keep them around the non-quantized ops between layers), so no credit is given for chains, and the
per-layer costs the allocator adds up are the table's own. Two coefficients, not one scale per precision: a
4-coefficient fit over a dozen noisy timings degenerates (a zero int8 scale).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linprog
from torch import nn

from shrink.eval.latency import measure_latency
from shrink.hw.layers import LayerSpec, input_widths, scaled, trace_layers
from shrink.hw.measured import LatencyTable, execution_kind
from shrink.hw.ort_int8 import int8_session
from shrink.hw.policy import FP32, LayerChoice, Policy
from shrink.hw.profile import Profile, load_profile

__all__ = ["Calibration", "calibrate", "policy_features", "boundary_kelems", "interleaved_latency_ms"]


@dataclass(frozen=True)
class Calibration:
    """Fitted end-to-end latency model (milliseconds) of one model on a measured profile; ``rms_ms`` is the fit's
    root-mean-square error over the ``n`` calibration measurements."""

    offset_ms: float
    per_kelem_ms: float
    rms_ms: float
    n: int

    def option_ms(self, spec: LayerSpec, kind: str, table_ms: float) -> float:
        """One layer's additive share for the allocator: its table time (boundaries and offset are charged by
        :meth:`predict_ms` on whole policies)."""
        return table_ms

    def predict_ms(self, features: tuple[float, float]) -> float:
        """End-to-end latency from :func:`policy_features`."""
        layers, boundary = features
        return self.offset_ms + layers + self.per_kelem_ms * boundary


def _kinds(specs: Sequence[LayerSpec], policy: Policy, profile: Profile) -> list[str]:
    assert profile.measured is not None
    return [execution_kind(policy.get(s.name, FP32), profile.measured) for s in specs]


def boundary_kelems(shaped: Sequence[LayerSpec], kinds: Sequence[str]) -> float:
    """Thousands of elements crossing an fp32/int8 boundary along the chain of layers ``shaped`` (at their widths)."""
    kelems = 0.0
    for i, (spec, kind) in enumerate(zip(shaped, kinds, strict=True)):
        if kind != "int8":
            continue
        if i == 0 or kinds[i - 1] != "int8":
            kelems += spec.in_elems / 1e3
        if i == len(kinds) - 1 or kinds[i + 1] != "int8":
            kelems += spec.out_elems / 1e3
    return kelems


def policy_features(
    specs: Sequence[LayerSpec], policy: Policy, profile: Profile, table: LatencyTable
) -> tuple[float, float]:
    """(sum of table ms, boundary kelems) for ``policy`` on the layers ``specs`` (full-width shapes, execution
    order; the policy's widths are applied here)."""
    widths = input_widths(list(specs), {n: c.width for n, c in policy.items()})
    shaped = [scaled(s, widths[s.name], policy.get(s.name, FP32).width) for s in specs]
    kinds = _kinds(specs, policy, profile)
    layers = sum(table.latency_ms(sh, policy.get(s.name, FP32)) for sh, s in zip(shaped, specs, strict=True))
    return layers, boundary_kelems(shaped, kinds)


def interleaved_latency_ms(
    sessions: Sequence[object], example_inputs: torch.Tensor, *, threads: int = 2, rounds: int = 3, reps: int = 10
) -> list[float]:
    """Latency (ms) of each ONNX Runtime session: timed round-robin ``rounds`` times, so a change in machine load
    hits every session alike, and the lowest round median kept (other processes only ever add time)."""
    runners = []
    for s in sessions:
        feeds = s.feeds(example_inputs)  # type: ignore[attr-defined]
        runners.append(lambda s=s, feeds=feeds: s.run_numpy(feeds))  # type: ignore[attr-defined]
    batch = int(example_inputs.shape[0])
    per: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        for i, fn in enumerate(runners):
            stats = measure_latency(fn, batch_size=batch, threads=threads, warmup=3, reps=reps, min_time_s=0.05)
            per[i].append(stats.median_ms)
    return [min(p) for p in per]


def _least_absolute(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative ``x`` minimizing ``sum |a @ x - y|`` (linear program over x and one slack per row)."""
    n, k = a.shape
    cost = np.concatenate([np.zeros(k), np.ones(n)])
    eye = np.eye(n)
    upper = np.block([[a, -eye], [-a, -eye]])  # a x - y <= t and y - a x <= t
    res = linprog(cost, A_ub=upper, b_ub=np.concatenate([y, -y]), bounds=[(0, None)] * (k + n), method="highs")
    if res.x is None:  # pragma: no cover - the program is always feasible (t large)
        raise RuntimeError(f"calibration fit failed: {res.message}")
    return res.x[:k]


def calibrate(
    model: nn.Module,
    example_inputs: torch.Tensor,
    calibration: list[torch.Tensor],
    profile: str | Profile = "cpu",
    table: LatencyTable | None = None,
    *,
    threads: int | None = None,
    rounds: int = 3,
) -> Calibration:
    """Fit :class:`Calibration` for ``model`` at ``example_inputs``' batch from 2 x layers + 2 end-to-end
    measurements (int8 QDQ graphs calibrated on ``calibration`` inputs)."""
    profile = load_profile(profile)
    assert profile.measured is not None, "calibration needs a measured profile"
    table = table or LatencyTable(profile.measured)
    threads = threads or profile.measured.threads
    specs = trace_layers(model, example_inputs)
    names = [s.name for s in specs]
    int8 = LayerChoice(bits=8)
    policies: list[dict[str, LayerChoice]] = [{}, {n: int8 for n in names}]
    if profile.measured.int8_kernels:
        policies += [{n: int8} for n in names]
        policies += [{m: int8 for m in names if m != n} for n in names]
    else:
        policies = [{}]
    sessions = []
    with tempfile.TemporaryDirectory(prefix="shrink-cal-") as tmp:
        for i, p in enumerate(policies):
            sessions.append(int8_session(model, f"{tmp}/{i}", example_inputs, calibration, sorted(p), threads=threads))
    measured = np.array(interleaved_latency_ms(sessions, example_inputs, threads=threads, rounds=rounds))
    feats = np.array([policy_features(specs, p, profile, table) for p in policies])
    rows = np.stack([np.ones(len(policies)), feats[:, 1]], axis=1)
    coef = _least_absolute(rows, measured - feats[:, 0])
    rms = float(np.sqrt(np.mean((rows @ coef + feats[:, 0] - measured) ** 2)))
    return Calibration(float(coef[0]), float(coef[1]), rms, len(policies))
