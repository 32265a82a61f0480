"""Allocation under an end-to-end latency budget on the measured CPU profile, with the hardware in the loop.

1. The profile is calibrated on this model (:func:`shrink.hw.calibrate.calibrate`): per-call offset, the cost of
   each place where int8 and fp32 layers meet, and the credit of int8 layers in a row, fitted to end-to-end timings.
2. The allocator sees additive per-layer costs (the table's times) and the budget less the offset; its answer is
   re-priced exactly (boundaries charged along the chain of layers).
3. The answer is then run end to end, timed together with the fp32 model and scaled to the machine speed of the
   calibration (fp32 then / fp32 now); while the measurement exceeds the budget, the layer budget is lowered by the
   excess and the allocation solved again (``verify`` rounds). ONNX Runtime's graph rewrites around an isolated int8
   layer (layout changes, unfused pooling) can cost more than any per-layer table predicts; measuring the answer is
   how the budget is kept. When no allocator answer fits, the least-loss homogeneous policies (every layer on int8
   kernels, or every layer fp32), which have no boundaries, are priced and measured too. Every end-to-end
   measurement is returned, for the report.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from shrink.autosearch.allocate import Allocation, Option, allocate
from shrink.errors import ConfigError
from shrink.hw.calibrate import Calibration, calibrate, interleaved_latency_ms, policy_features
from shrink.hw.layers import LayerSpec
from shrink.hw.measured import LatencyTable, execution_kind
from shrink.hw.ort_int8 import int8_sessions
from shrink.hw.policy import LayerChoice
from shrink.hw.profile import Profile

__all__ = ["LatencyPlan", "calibrated_options", "plan_latency"]


@dataclass(frozen=True)
class LatencyPlan:
    """The allocation (``totals["latency"]`` = calibrated end-to-end prediction, seconds), the calibration, and
    the ``(predicted s, measured s)`` of every policy run end to end while keeping the budget."""

    allocation: Allocation
    calibration: Calibration
    checks: list[tuple[float, float]]


def calibrated_options(
    options: dict[str, list[Option]], specs: dict[str, LayerSpec], cal: Calibration, profile: Profile
) -> dict[str, list[Option]]:
    """Options with ``latency`` replaced by the calibrated additive share (seconds)."""
    assert profile.measured is not None
    out = {}
    for name, opts in options.items():
        out[name] = [
            replace(
                o,
                costs={
                    **o.costs,
                    "latency": cal.option_ms(
                        specs[name], execution_kind(o.choice, profile.measured), o.costs["latency"] * 1e3
                    )
                    / 1e3,
                },
            )
            for o in opts
        ]
    return out


class _Verifier:
    """Times a policy's real model end to end together with the all-fp32 model (interleaved rounds) and reports it
    at the machine speed of the calibration: x fp32 then / fp32 now. On a shared machine the speed drifts by 20%
    within a minute, more than the margins a budget is set with; relative to a reference timed alongside it does
    not."""

    def __init__(
        self, model: nn.Module, example_inputs: torch.Tensor, calibration: list[torch.Tensor], profile: Profile
    ) -> None:
        assert profile.measured is not None
        self.model, self.x, self.calib, self.profile = model, example_inputs, calibration, profile
        self.threads = profile.measured.threads
        self.fp32 = int8_sessions([(model, [])], example_inputs, calibration, self.threads)[0]

    def seconds(self, policy: dict, fp32_then_ms: float) -> float:
        assert self.profile.measured is not None
        int8 = sorted(n for n, c in policy.items() if execution_kind(c, self.profile.measured) == "int8")
        session = int8_sessions([(self.model, int8)], self.x, self.calib, self.threads)[0]
        fp32_now, ms = interleaved_latency_ms([self.fp32, session], self.x, threads=self.threads)
        return ms * (fp32_then_ms / fp32_now if fp32_then_ms > 0 else 1.0) / 1e3


def _homogeneous(opts: dict[str, list[Option]], profile: Profile) -> list[tuple[dict[str, LayerChoice], float]]:
    """Per kernel kind (int8, fp32), every layer at its least-loss option of that kind: (policy, predicted loss),
    lowest latency first."""
    assert profile.measured is not None
    out = []
    for kind in ("int8", "fp32"):
        picks = {}
        for name, options in opts.items():
            same = [o for o in options if execution_kind(o.choice, profile.measured) == kind]
            if not same:
                break
            picks[name] = min(same, key=lambda o: o.loss)
        else:
            cost = sum(o.costs["latency"] for o in picks.values())
            policy = {n: o.choice for n, o in picks.items() if o.choice != LayerChoice()}
            out.append((cost, policy, sum(o.loss for o in picks.values())))
    return [(policy, loss) for _, policy, loss in sorted(out, key=lambda t: t[0])]


def _homogeneous_plan(
    opts: dict[str, list[Option]],
    all_specs: list[LayerSpec],
    cal: Calibration,
    verifier: _Verifier,
    profile: Profile,
    table: LatencyTable,
    limit_s: float,
    checks: list[tuple[float, float]],
) -> LatencyPlan | None:
    """The additive allocator cannot see fp32/int8 boundary costs, so its cheapest answer can be a mix that is
    slower end to end than a homogeneous one: price the least-loss all-int8 and all-fp32 policies exactly and
    measure them in turn; the first within ``limit_s`` (None when neither is). Measurements join ``checks``."""
    for policy, loss in _homogeneous(opts, profile):
        predicted = cal.predict_ms(policy_features(all_specs, policy, profile, table)) / 1e3
        measured = verifier.seconds(policy, cal.fp32_ms)
        checks.append((predicted, measured))
        if measured <= limit_s:
            totals = {"latency": predicted}
            return LatencyPlan(Allocation(policy, loss, totals, "homogeneous kernel kind"), cal, checks)
    return None


def plan_latency(
    model: nn.Module,
    options: dict[str, list[Option]],
    all_specs: list[LayerSpec],
    budget_s: float,
    profile: Profile,
    table: LatencyTable,
    example_inputs: torch.Tensor,
    calibration: list[torch.Tensor],
    *,
    solver: str = "milp",
    verify: int = 4,
    headroom: float = 0.0,
    calibration_fit: Calibration | None = None,
) -> LatencyPlan:
    """The least-loss allocation whose calibrated prediction, and (``verify`` > 0) end-to-end measurement, is
    within ``budget_s`` (end-to-end seconds at ``example_inputs``' batch); a measurement must be within
    ``budget_s x (1 - headroom)``. Options carry the table's latencies for full-width layers (mixed precision: bit
    widths only). ``calibration_fit``: a :func:`~shrink.hw.calibrate.calibrate` result of this model to reuse."""
    limit_s = budget_s * (1 - headroom)
    cal = calibration_fit or calibrate(model, example_inputs, calibration, profile, table)
    verifier = _Verifier(model, example_inputs, calibration, profile)
    by_name = {s.name: s for s in all_specs}
    opts = calibrated_options(options, by_name, cal, profile)
    layer_budget = limit_s - cal.offset_ms / 1e3
    checks: list[tuple[float, float]] = []
    floor = sum(min(o.costs["latency"] for o in v) for v in opts.values())
    for _ in range(4 * max(verify, 1) + 8):
        # below the floor the calibrated prediction says nothing fits; on a noisy machine the fit can be off, so
        # the cheapest allocation is still tried and its measurement decides
        layer_budget = max(layer_budget, floor)
        at_floor = layer_budget <= floor * (1 + 1e-9)
        plan = allocate(opts, {"latency": layer_budget * (1 + 1e-9)}, solver=solver)
        predicted = cal.predict_ms(policy_features(all_specs, plan.policy, profile, table)) / 1e3
        if predicted > limit_s and not at_floor:  # boundaries the additive costs did not charge
            layer_budget -= predicted - limit_s + 1e-9
            continue
        if len(checks) < verify:
            measured = verifier.seconds(plan.policy, cal.fp32_ms)
            checks.append((predicted, measured))
            if measured <= limit_s:
                return LatencyPlan(replace(plan, totals={**plan.totals, "latency": predicted}), cal, checks)
            if at_floor:
                break
            layer_budget -= measured - limit_s + 1e-9
            continue
        if 0 < predicted <= limit_s:  # a fit with a negative offset can price a tiny model at or below zero
            return LatencyPlan(replace(plan, totals={**plan.totals, "latency": predicted}), cal, checks)
        break
    homogeneous = _homogeneous_plan(opts, all_specs, cal, verifier, profile, table, limit_s, checks)
    if homogeneous is not None:
        return homogeneous
    raise ConfigError(
        f"latency budget {budget_s * 1e3:.4g} ms (measured within {limit_s * 1e3:.4g} ms, headroom {headroom:.0%}): "
        "no allocation met it when priced and measured "
        f"(checks predicted/measured ms: {[(round(p * 1e3, 3), round(m * 1e3, 3)) for p, m in checks]})"
    )
