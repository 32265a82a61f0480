"""``estimate(model, profile, example_inputs, policy)``: per-layer and total latency, energy and memory of a model
under a compression policy on a hardware profile, and how well such estimates rank-predict measured latency."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from scipy.stats import spearmanr
from torch import nn

from shrink.hw.layers import LayerSpec, input_widths, scaled, trace_layers
from shrink.hw.measured import LatencyTable, execution_kind
from shrink.hw.policy import FP32, LayerChoice, Policy
from shrink.hw.profile import Profile, load_profile
from shrink.hw.roofline import ACTIVATION_SRAM_SHARE, LayerCost, activation_bits, roofline_cost, weight_bytes

__all__ = ["Estimate", "estimate", "layer_cost", "policy_costs", "rank_correlation", "RankCorrelation"]


@dataclass
class Estimate:
    """Costs of one model + policy on one profile. ``energy_j`` is None on measured profiles (not measured)."""

    profile: str
    layers: list[LayerCost]
    latency_s: float
    energy_j: float | None
    weight_bytes: float
    peak_activation_bytes: float
    macs: float
    bitops: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def layer_cost(
    spec: LayerSpec,
    choice: LayerChoice,
    profile: Profile,
    *,
    table: LatencyTable | None = None,
    weights_cached: bool = True,
) -> LayerCost:
    """Cost of one layer (already at its kept width) under ``choice`` on ``profile``."""
    if profile.kind == "accelerator":
        assert profile.accelerator is not None
        return roofline_cost(spec, choice, profile.accelerator, weights_cached)
    assert profile.measured is not None
    table = table or LatencyTable(profile.measured)
    ms = table.latency_ms(spec, choice)
    kind = execution_kind(choice, profile.measured)
    a_bits = activation_bits("int8" if choice.bits <= 8 else "fp32")
    return LayerCost(
        name=spec.name,
        choice=choice.label(),
        executed_as=f"{kind} ({profile.measured.runtime})",
        latency_s=ms / 1e3,
        energy_j=None,
        weight_bytes=weight_bytes(spec, choice),
        activation_bytes=(spec.in_elems + spec.out_elems) * a_bits / 8,
        macs=spec.macs,
        bitops=spec.macs * choice.bits * a_bits,
        bound="measured",
    )


def _weight_cache_budget(profile: Profile) -> float:
    assert profile.accelerator is not None
    return profile.accelerator.sram_bytes * (1 - ACTIVATION_SRAM_SHARE)


def policy_costs(
    specs: Sequence[LayerSpec], policy: Policy, profile: Profile, table: LatencyTable | None = None
) -> list[LayerCost]:
    """Per-layer costs of ``policy`` (missing layers: fp32). Channel widths shrink the layer's outputs and its
    consumer's inputs; on accelerators, weights are cached in SRAM in execution order while they fit."""
    widths = input_widths(list(specs), {n: c.width for n, c in policy.items()})
    if profile.kind == "measured" and table is None:
        assert profile.measured is not None
        table = LatencyTable(profile.measured)
    cached_bytes, out = 0.0, []
    for spec in specs:
        choice = policy.get(spec.name, FP32)
        shaped = scaled(spec, widths[spec.name], choice.width)
        cached = True
        if profile.kind == "accelerator":
            cached_bytes += weight_bytes(shaped, choice)
            cached = cached_bytes <= _weight_cache_budget(profile)
        out.append(layer_cost(shaped, choice, profile, table=table, weights_cached=cached))
    return out


def estimate(
    model: nn.Module,
    profile: str | Profile,
    example_inputs: Any,
    policy: Policy | None = None,
    *,
    table: LatencyTable | None = None,
) -> Estimate:
    """Per-layer and total latency / energy / memory of ``model`` compressed by ``policy`` on ``profile``.

    Only Conv/Linear layers are costed; elementwise ops, pooling and runtime overhead are not (the estimate ranks
    policies; compare absolute figures with measurements, see :func:`rank_correlation`).
    """
    profile = load_profile(profile)
    specs = trace_layers(model, example_inputs)
    policy = policy or {}
    unknown = set(policy) - {s.name for s in specs}
    if unknown:
        from shrink.errors import ConfigError

        raise ConfigError(f"estimate: policy names layers that do not run on the example input: {sorted(unknown)}")
    costs = policy_costs(specs, policy, profile, table)
    energies = [c.energy_j for c in costs]
    notes = []
    if profile.kind == "measured":
        notes.append("latency from the measured per-layer table (real kernels); energy not measured")
    else:
        notes.append("latency and energy modelled (roofline); not measured on a device")
    return Estimate(
        profile=profile.name,
        layers=costs,
        latency_s=sum(c.latency_s for c in costs),
        energy_j=None if any(e is None for e in energies) else sum(e for e in energies if e is not None),
        weight_bytes=sum(c.weight_bytes for c in costs),
        peak_activation_bytes=max(c.activation_bytes for c in costs),
        macs=sum(c.macs for c in costs),
        bitops=sum(c.bitops for c in costs),
        notes=notes,
    )


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman rank correlation between predicted and measured latencies over ``n`` layers/configs."""

    spearman: float
    pvalue: float
    n: int


def rank_correlation(predicted: Sequence[float], measured: Sequence[float]) -> RankCorrelation:
    """How well ``predicted`` orders the ``measured`` latencies (Spearman's rho, scipy.stats.spearmanr)."""
    if len(predicted) != len(measured) or len(predicted) < 3:
        raise ValueError(f"rank_correlation needs >= 3 paired values, got {len(predicted)} and {len(measured)}")
    res = spearmanr(predicted, measured)
    return RankCorrelation(float(res.statistic), float(res.pvalue), len(predicted))
