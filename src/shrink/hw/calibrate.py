"""Calibrate the measured CPU profile against a few end-to-end measurements of one model.

The latency table holds each layer's marginal time measured alone (:mod:`shrink.hw.measured`); an int8 entry is a
one-layer QDQ graph, so it already includes a QuantizeLinear on its input and a DequantizeLinear on its output. A
model adds what no layer entry holds: the session call and the non-layer ops (once per call), and what happens
where int8 layers meet fp32 data. So an end-to-end latency is modelled as

    offset + scale x sum(table ms of every layer at its precision) + sum over boundaries(cost per kelem x kelems)
           - chain credit per kelem x kelems passed from an int8 layer directly to an int8 layer
           - link credit x number of such hand-overs

The scale carries what a layer timed alone pays and a model does not: a one-layer session converts its input and
output between ONNX Runtime's blocked layout and the plain one and cannot fuse with its neighbours, so on the digits
CNN the fp32 table sum came out near twice the whole fp32 model's time. The offset (either sign) is what is left
per call.

A boundary is a place in execution order where an int8 layer meets fp32 data: its input when the layer before it
(or the model input) is fp32, its output when the layer after it (or the model output) is. Each such place has its
own cost per thousand elements, because what ONNX Runtime does there depends on the ops around it: on the digits
CNN an int8 convolution after an fp32 one and a max-pool makes ONNX Runtime pool in uint8 in NCHW layout, a generic
kernel about 15x slower than the fp32 NCHWc pool, while the same boundary after a linear layer costs one cheap
QuantizeLinear. Those costs are per element crossing (a fixed cost per boundary op was tried as one more coefficient,
fitted on two widths: it came out 0 on the digits CNN).

An int8 table entry is timed alone, with a QuantizeLinear before and a DequantizeLinear after the layer; two int8
layers in a row hand each other uint8 tensors and run neither, hence the credits: one proportional (like those
ops' work) to the elements handed over, one per hand-over (what running an op costs whatever its size). Without the
second, a model whose layers are thinner than the calibrated one keeps paying for operators it does not run (on the
digits CNN pruned to a quarter of its channels, all int8, the prediction came out well above the measured time).
The two credits can only be told apart on more than one width, so the second is fitted only with ``thinner`` copies
of the model (:func:`calibrate`).

The scale is the all-fp32 model's time over its table sum; the other ``2 + 2 x layers`` coefficients (non-negative,
the offset of either sign; ``3 + 2 x layers`` with thinner copies) are fitted to ``4 x layers`` end-to-end ONNX
Runtime timings of the model (all fp32; all int8; each layer alone int8; each layer alone fp32; each prefix and each
suffix of the layers int8), as many again for each thinner copy, timed together and interleaved, by least absolute
deviations (a linear program): a few timings disturbed by the machine should not bend the fit, which a
squared-error fit would let them do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import linprog
from torch import nn

from shrink.errors import ModelError
from shrink.eval.latency import interleaved_latency
from shrink.hw.layers import LayerSpec, input_widths, scaled, trace_layers
from shrink.hw.measured import LatencyTable, execution_kind
from shrink.hw.ort_int8 import int8_sessions
from shrink.hw.policy import FP32, LayerChoice, Policy
from shrink.hw.profile import Profile, load_profile

__all__ = [
    "Calibration",
    "PolicyFeatures",
    "calibrate",
    "calibration_policies",
    "policy_features",
    "boundary_kelems",
    "interleaved_latency_ms",
]


class PolicyFeatures(NamedTuple):
    """What the calibrated model prices in a policy: the table times of its layers summed, the thousands of
    elements at each layer's input and output boundary (``2 x layers``), the thousands of elements passed from an
    int8 layer directly to an int8 layer, and how many such hand-overs there are."""

    layers_ms: float
    boundary_kelems: tuple[float, ...]
    int8_link_kelems: float
    int8_links: int = 0


@dataclass(frozen=True)
class Calibration:
    """Fitted end-to-end latency model (milliseconds) of one model on a measured profile.

    ``boundary_ms`` holds, for each layer in execution order, the cost per thousand elements of a boundary at its
    input and at its output (``(name, in, out)``); ``chain_credit_ms`` is taken off per thousand elements passed
    from an int8 layer to an int8 layer and ``link_credit_ms`` per such hand-over; ``rms_ms`` is the fit's
    root-mean-square error over the ``n`` calibration measurements; ``fp32_ms`` is the all-fp32 model's time among
    them, the machine speed the fit holds at."""

    offset_ms: float
    boundary_ms: tuple[tuple[str, float, float], ...]
    chain_credit_ms: float
    rms_ms: float
    n: int
    fp32_ms: float = 0.0
    #: multiplies every table time (a layer in a model runs faster than alone: see the module's docstring)
    table_scale: float = 1.0
    link_credit_ms: float = 0.0

    def option_ms(self, spec: LayerSpec, kind: str, table_ms: float) -> float:
        """One layer's additive share for the allocator: its table time, scaled (boundaries and offset are charged
        by :meth:`predict_ms` on whole policies)."""
        return self.table_scale * table_ms

    def predict_ms(self, features: PolicyFeatures) -> float:
        """End-to-end latency from :func:`policy_features`."""
        coef = [c for _, cin, cout in self.boundary_ms for c in (cin, cout)]
        if len(coef) != len(features.boundary_kelems):
            raise ValueError(
                f"calibration is for {len(coef) // 2} layers, features for {len(features.boundary_kelems) // 2}"
            )
        boundary = sum(c * k for c, k in zip(coef, features.boundary_kelems, strict=True))
        layers = self.table_scale * features.layers_ms
        credit = self.chain_credit_ms * features.int8_link_kelems + self.link_credit_ms * features.int8_links
        return self.offset_ms + layers + boundary - credit

    def describe(self) -> str:
        """The fitted coefficients in words (boundaries with a zero cost left out)."""
        parts = [
            f"{name} {where} {c:.3g}"
            for name, cin, cout in self.boundary_ms
            for where, c in (("in", cin), ("out", cout))
            if c > 0
        ]
        return (
            f"offset {self.offset_ms:.3g} ms; table times x {self.table_scale:.3g}; ms per 1000 elements at "
            f"int8/fp32 boundaries: {', '.join(parts) or 'none'}; credit {self.chain_credit_ms:.3g} ms per 1000 "
            f"elements int8 to int8 and {self.link_credit_ms:.3g} ms per hand-over (fit rms {self.rms_ms:.3g} ms "
            f"over {self.n} timings)"
        )


def _kinds(specs: Sequence[LayerSpec], policy: Policy, profile: Profile) -> list[str]:
    assert profile.measured is not None
    return [execution_kind(policy.get(s.name, FP32), profile.measured) for s in specs]


def boundary_kelems(shaped: Sequence[LayerSpec], kinds: Sequence[str]) -> tuple[float, ...]:
    """Thousands of elements crossing an fp32/int8 boundary at each layer's input and output (``2 x layers``
    values, in execution order) along the chain of layers ``shaped`` (at their widths)."""
    out = [0.0] * (2 * len(kinds))
    for i, (spec, kind) in enumerate(zip(shaped, kinds, strict=True)):
        if kind != "int8":
            continue
        if i == 0 or kinds[i - 1] != "int8":
            out[2 * i] = spec.in_elems / 1e3
        if i == len(kinds) - 1 or kinds[i + 1] != "int8":
            out[2 * i + 1] = spec.out_elems / 1e3
    return tuple(out)


def policy_features(
    specs: Sequence[LayerSpec], policy: Policy, profile: Profile, table: LatencyTable
) -> PolicyFeatures:
    """:class:`PolicyFeatures` of ``policy`` on the layers ``specs`` (full-width shapes, execution order; the
    policy's widths are applied here)."""
    widths = input_widths(list(specs), {n: c.width for n, c in policy.items()})
    shaped = [scaled(s, widths[s.name], policy.get(s.name, FP32).width) for s in specs]
    kinds = _kinds(specs, policy, profile)
    layers = sum(table.latency_ms(sh, policy.get(s.name, FP32)) for sh, s in zip(shaped, specs, strict=True))
    linked = [sh for sh, a, b in zip(shaped, kinds, kinds[1:], strict=False) if a == b == "int8"]
    return PolicyFeatures(layers, boundary_kelems(shaped, kinds), sum(sh.out_elems / 1e3 for sh in linked), len(linked))


def interleaved_latency_ms(
    sessions: Sequence[object], example_inputs: torch.Tensor, *, threads: int = 2, rounds: int = 15
) -> list[float]:
    """Latency (ms) of each ONNX Runtime session on ``example_inputs``, all timed together round-robin and
    normalized per round (:func:`shrink.eval.latency.interleaved_latency`), so a change in machine load hits every
    session alike instead of reordering them."""
    runners = []
    for s in sessions:
        feeds = s.feeds(example_inputs)  # type: ignore[attr-defined]
        runners.append(lambda s=s, feeds=feeds: s.run_numpy(feeds))  # type: ignore[attr-defined]
    return interleaved_latency(runners, threads=threads, rounds=rounds)


def _least_absolute(a: np.ndarray, y: np.ndarray, free: int = 0, floor: float | None = None) -> np.ndarray:
    """``x`` minimizing ``sum |a @ x - y|`` (linear program over x and one slack per row), non-negative except its
    first ``free`` entries, which are at least ``floor`` (None: unbounded)."""
    n, k = a.shape
    cost = np.concatenate([np.zeros(k), np.ones(n)])
    eye = np.eye(n)
    upper = np.block([[a, -eye], [-a, -eye]])  # a x - y <= t and y - a x <= t
    bounds = [(floor, None)] * free + [(0, None)] * (k + n - free)
    res = linprog(cost, A_ub=upper, b_ub=np.concatenate([y, -y]), bounds=bounds, method="highs")
    if res.x is None:  # pragma: no cover - the program is always feasible (t large)
        raise RuntimeError(f"calibration fit failed: {res.message}")
    return res.x[:k]


def _check_thinner(index: int, specs: Sequence[LayerSpec], thin: Sequence[LayerSpec]) -> None:
    """``thinner[index]`` must have the model's layers in the same order, none of them wider."""
    where = f"calibrate: thinner[{index}]"
    if len(thin) != len(specs):
        raise ModelError(f"{where} has {len(thin)} layers, the model {len(specs)}")
    for full, narrow in zip(specs, thin, strict=True):
        if full.name != narrow.name:
            raise ModelError(f"{where}: layer {narrow.name!r} stands where the model has {full.name!r}")
        if narrow.in_elems > full.in_elems or narrow.out_elems > full.out_elems:
            raise ModelError(f"{where}: layer {full.name!r} is wider than in the model")


def calibrate(
    model: nn.Module,
    example_inputs: torch.Tensor,
    calibration: list[torch.Tensor],
    profile: str | Profile = "cpu",
    table: LatencyTable | None = None,
    *,
    threads: int | None = None,
    rounds: int = 15,
    thinner: Sequence[nn.Module] = (),
) -> Calibration:
    """Fit :class:`Calibration` for ``model`` at ``example_inputs``' batch from the ``4 x layers`` end-to-end
    timings of :func:`calibration_policies` (int8 QDQ graphs, activation ranges from ``calibration`` inputs).

    ``thinner``: copies of ``model`` with fewer channels (the same layers, in the same order), whose mixes are timed
    too. Without them the fit sees one width only and cannot tell a cost per element from a cost per operator, so
    its predictions for pruned models lean on the assumption that every cost scales with the elements."""
    profile = load_profile(profile)
    assert profile.measured is not None, "calibration needs a measured profile"
    table = table or LatencyTable(profile.measured)
    threads = threads or profile.measured.threads
    specs = trace_layers(model, example_inputs)
    names = [s.name for s in specs]
    variants = [(model, specs)]
    for i, thin in enumerate(thinner):
        thin_specs = trace_layers(thin, example_inputs)
        _check_thinner(i, specs, thin_specs)
        variants.append((thin, thin_specs))
    policies = calibration_policies(names) if profile.measured.int8_kernels else [{}]
    timed = [(m, p) for m, _ in variants for p in policies]
    sessions = int8_sessions(timed, example_inputs, calibration, threads=threads)
    measured = np.array(interleaved_latency_ms(sessions, example_inputs, threads=threads, rounds=rounds))
    feats = [policy_features(sp, p, profile, table) for _, sp in variants for p in policies]
    # the scale: the all-fp32 model's time over its table sum (no boundary there); the rest fitted to the residuals
    scale = float(measured[0] / feats[0].layers_ms) if feats[0].layers_ms > 0 else 1.0
    # the credit per hand-over only where thinner copies can tell it from the one per element (at one width the
    # two columns can be near proportional, and the fit could split the credit between them anyhow)
    rows = np.array(
        [[1.0, *f.boundary_kelems, -f.int8_link_kelems, *([-f.int8_links] if thinner else [])] for f in feats]
    )
    layers = scale * np.array([f.layers_ms for f in feats])
    # the offset may be negative (layers timed alone run slower than in the model), but never so far that the
    # all-fp32 model is priced under half its measured time: on a tiny model a noisy fit went below zero
    coef = _least_absolute(rows, measured - layers, free=1, floor=-0.5 * float(measured[0]))
    rms = float(np.sqrt(np.mean((rows @ coef + layers - measured) ** 2)))
    boundary = tuple((n, float(coef[1 + 2 * i]), float(coef[2 + 2 * i])) for i, n in enumerate(names))
    chain = 1 + 2 * len(names)
    return Calibration(
        float(coef[0]),
        boundary,
        float(coef[chain]),
        rms,
        len(timed),
        float(measured[0]),
        table_scale=scale,
        link_credit_ms=float(coef[chain + 1]) if thinner else 0.0,
    )


def calibration_policies(names: Sequence[str]) -> list[dict[str, LayerChoice]]:
    """The int8/fp32 mixes :func:`calibrate` times: all fp32 (first), all int8, each layer alone int8, each layer alone
    fp32, and each proper prefix and suffix of the layers int8 (``4 x layers`` policies; some coincide for one
    or two layers, and are timed twice)."""
    int8 = LayerChoice(bits=8)
    policies: list[dict[str, LayerChoice]] = [{}, {n: int8 for n in names}]
    policies += [{n: int8} for n in names]
    policies += [{m: int8 for m in names if m != n} for n in names]
    policies += [{m: int8 for m in names[:k]} for k in range(1, len(names))]
    policies += [{m: int8 for m in names[k:]} for k in range(1, len(names))]
    return policies
