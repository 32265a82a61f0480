"""The allocation problem for a model: per-layer options with predicted loss (sensitivity) and costs on a profile.

The ``bytes`` cost of an option is what the layer takes in the file :func:`shrink.save` writes once
:func:`~shrink.autosearch.apply_policy` has applied it: codes at their bit width (bit-packed), per-channel scales, the
bias and the input grid (:func:`shrink.quant.layers.lowbit.stored_bytes`). Only the file's header and the
layers outside the budget are not counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn

from shrink.autosearch.allocate import Option
from shrink.autosearch.sensitivity import hessian_sensitivity, hessian_traces, measured_sensitivity
from shrink.errors import ConfigError, DataError
from shrink.hw.estimate import layer_cost
from shrink.hw.layers import LayerSpec, input_widths, scaled
from shrink.hw.measured import LatencyTable
from shrink.hw.policy import FP32, LayerChoice, Policy
from shrink.hw.profile import Profile
from shrink.quant.layers.lowbit import stored_bytes
from shrink.quant.numerics.qparams import QParams

__all__ = [
    "BUDGET_KINDS",
    "layer_options",
    "option_costs",
    "uniform_cost",
    "sensitivities",
    "file_bytes",
    "policy_file_bytes",
]

BUDGET_KINDS = ("bytes", "latency", "energy", "bitops")


def file_bytes(spec: LayerSpec, choice: LayerChoice, quantized_inputs: bool = True) -> int:
    """Bytes the layer takes in the model file once ``choice`` is applied (``quantized_inputs``: layers at <= 8 bits
    store their 8-bit input grid)."""
    quantized_input = quantized_inputs and choice.bits <= 8
    return stored_bytes(spec.weight_count, spec.out_channels, spec.bias, choice.bits, choice.sparsity, quantized_input)


def policy_file_bytes(specs: Sequence[LayerSpec], policy: Policy, quantized_inputs: bool = True) -> int:
    """Summed :func:`file_bytes` of ``specs`` under ``policy`` (missing layers: fp32), channel widths propagated to
    the consumers' inputs as :func:`shrink.hw.policy_costs` does."""
    widths = input_widths(list(specs), {n: c.width for n, c in policy.items()})
    total = 0
    for spec in specs:
        choice = policy.get(spec.name, FP32)
        total += file_bytes(scaled(spec, widths[spec.name], choice.width), choice, quantized_inputs)
    return total


def option_costs(
    spec: LayerSpec,
    choice: LayerChoice,
    profile: Profile | None,
    table: LatencyTable | None,
    quantized_inputs: bool = True,
) -> dict[str, float]:
    """Costs of one layer option: bytes in the model file, latency (s) and energy (J) on ``profile``, BitOps.

    On accelerators the option is priced with its weights cached on chip (per-layer costs must not depend on the
    other layers' choices); :func:`shrink.hw.estimate` prices a whole policy with the real cache residency.
    """
    a_bits = 8 if choice.bits <= 8 else choice.bits
    out = {
        "bytes": float(file_bytes(spec, choice, quantized_inputs)),
        "bitops": float(spec.macs * choice.bits * a_bits),
    }
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
    quantized_inputs: bool = True,
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
                        scaled(spec, c.width if spec.name in follow_width else 1.0, c.width),
                        c,
                        profile,
                        table,
                        quantized_inputs,
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
