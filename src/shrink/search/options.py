"""The allocation problem for a model: per-layer options with predicted loss (sensitivity) and costs on a profile."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn

from shrink.errors import ConfigError, DataError
from shrink.hw.estimate import layer_cost
from shrink.hw.layers import LayerSpec, scaled
from shrink.hw.measured import LatencyTable
from shrink.hw.policy import LayerChoice
from shrink.hw.profile import Profile
from shrink.hw.roofline import weight_bytes
from shrink.quant.qparams import QParams
from shrink.search.allocate import Option
from shrink.search.sensitivity import hessian_sensitivity, hessian_traces, measured_sensitivity

__all__ = ["BUDGET_KINDS", "layer_options", "option_costs", "uniform_cost", "sensitivities"]

BUDGET_KINDS = ("bytes", "latency", "energy", "bitops")


def option_costs(
    spec: LayerSpec, choice: LayerChoice, profile: Profile | None, table: LatencyTable | None
) -> dict[str, float]:
    """Costs of one layer option: weight bytes, latency (s) and energy (J) on ``profile``, BitOps.

    On accelerators the option is priced with its weights cached on chip (per-layer costs must not depend on the
    other layers' choices); :func:`shrink.hw.estimate` prices a whole policy with the real cache residency.
    """
    a_bits = 8 if choice.bits <= 8 else choice.bits
    out = {"bytes": weight_bytes(spec, choice), "bitops": float(spec.macs * choice.bits * a_bits)}
    if profile is None:  # byte / BitOps budgets need no hardware profile
        return out
    cost = layer_cost(spec, choice, profile, table=table, weights_cached=True)
    out["latency"] = cost.latency_s
    if cost.energy_j is not None:
        out["energy"] = cost.energy_j
    return out


def sensitivities(
    model: nn.Module,
    layers: Sequence[str],
    choices: Sequence[LayerChoice],
    data: Iterable[Any] | None,
    method: str,
    *,
    batches: int,
    input_qparams: dict[str, QParams] | None = None,
    hutchinson_samples: int = 32,
) -> dict[str, dict[LayerChoice, float]]:
    """Predicted loss increase of each (layer, choice): measured one layer at a time, or HAWQ-v2 Hessian traces."""
    if data is None:
        raise DataError("sensitivity: needs labelled data (val= or train=)")
    if method == "measured":
        return measured_sensitivity(model, layers, choices, data, batches=batches, input_qparams=input_qparams)
    if method == "hessian":
        traces = hessian_traces(model, layers, data, batches=batches, samples=hutchinson_samples)
        return hessian_sensitivity(model, traces, choices)
    raise ConfigError(f"sensitivity method must be 'measured' or 'hessian', got {method!r}")


def layer_options(
    specs: Sequence[LayerSpec],
    choices: Sequence[LayerChoice],
    sensitivity: dict[str, dict[LayerChoice, float]],
    profile: Profile | None,
    table: LatencyTable | None,
    follow_width: frozenset[str] = frozenset(),
) -> dict[str, list[Option]]:
    """One :class:`Option` per (layer, choice) for the layers in ``sensitivity``; a choice's cost is priced at its
    kept output width, and for layers in ``follow_width`` at the same fraction of input channels (as if its producer
    kept the same width; whole policies are re-priced exactly by :func:`shrink.hw.policy_costs`)."""
    out: dict[str, list[Option]] = {}
    for spec in specs:
        if spec.name in sensitivity:
            out[spec.name] = [
                Option(
                    c,
                    sensitivity[spec.name][c],
                    option_costs(
                        scaled(spec, c.width if spec.name in follow_width else 1.0, c.width), c, profile, table
                    ),
                )
                for c in choices
            ]
    return out


def uniform_cost(options: dict[str, list[Option]], choice: LayerChoice, kind: str) -> float:
    """Summed ``kind`` cost when every layer takes ``choice``."""
    total = 0.0
    for name, opts in options.items():
        match = [o for o in opts if o.choice == choice]
        if not match:
            raise ConfigError(f"budget: layer {name!r} has no option {choice.label()}")
        total += match[0].costs[kind]
    return total
