"""Roofline cost of one layer on a modelled accelerator: latency is the larger of compute time and off-chip transfer
time; energy adds MACs, on-chip (SRAM) bytes and off-chip (DRAM) bytes.

Bytes moved are counted as well as MACs: weights at their stored bit width (streamed from DRAM unless cached in
SRAM), activations in and out at 8 bits for integer layers and 16/32 bits for float ones (kept on chip when they
fit in SRAM, spilled to DRAM otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

from shrink.hw.layers import LayerSpec
from shrink.hw.policy import LayerChoice
from shrink.hw.profile import AcceleratorSpec, precision_of

__all__ = ["LayerCost", "roofline_cost", "weight_bytes", "ACTIVATION_SRAM_SHARE"]

#: fraction of SRAM reserved for activations; the rest caches weights
ACTIVATION_SRAM_SHARE = 0.25
_BITS = {"int2": 2, "int4": 4, "int8": 8, "fp16": 16, "fp32": 32}


@dataclass(frozen=True)
class LayerCost:
    name: str
    choice: str  # the policy's choice, e.g. "4b/s0.5"
    executed_as: str  # the precision or kernel that runs it, e.g. "int8"
    latency_s: float
    energy_j: float | None
    weight_bytes: float
    activation_bytes: float
    macs: float
    bitops: float
    dram_bytes: float = 0.0
    bound: str = ""  # "compute" | "memory" | "measured"


def weight_bytes(spec: LayerSpec, choice: LayerChoice, sparse: bool | None = None) -> float:
    """Bytes of the layer's weights at ``choice.bits``; stored as bitmask + non-zeros when ``sparse`` (default: when
    at least half the weights are zero, as :func:`shrink.save` does)."""
    count = spec.weight_count
    if sparse is None:
        sparse = choice.sparsity >= 0.5
    if sparse and choice.sparsity > 0:
        return count * (1 - choice.sparsity) * choice.bits / 8 + count / 8
    return count * choice.bits / 8


def activation_bits(precision: str) -> int:
    return 8 if precision.startswith("int") else _BITS[precision]


def roofline_cost(spec: LayerSpec, choice: LayerChoice, acc: AcceleratorSpec, weights_cached: bool) -> LayerCost:
    """Latency and energy of ``spec`` (already scaled to its kept width) under ``choice`` on ``acc``."""
    precision = acc.executed_as(choice.bits)
    on_device = LayerChoice(bits=_BITS[precision], sparsity=choice.sparsity)  # as stored and moved on the device
    w_bytes = weight_bytes(spec, on_device, sparse=acc.sparse_weights)
    a_bits = activation_bits(precision)
    in_bytes, out_bytes = spec.in_elems * a_bits / 8, spec.out_elems * a_bits / 8
    keep = (1 - choice.sparsity) if acc.sparse_weights else 1.0
    macs = spec.macs * keep
    compute_s = macs / (acc.macs_per_s[precision] * acc.utilization)
    dram = 0.0 if weights_cached else w_bytes
    if in_bytes + out_bytes > acc.sram_bytes * ACTIVATION_SRAM_SHARE:
        dram += in_bytes + out_bytes  # activations spill: read the input and write the output off chip
    transfer_s = dram / acc.dram_bytes_per_s
    sram = w_bytes + in_bytes + out_bytes  # each byte through the on-chip buffer once (ideal reuse)
    e = acc.energy
    energy_pj = macs * e.mac_pj[precision] + sram * e.sram_byte_pj + dram * e.dram_byte_pj
    return LayerCost(
        name=spec.name,
        choice=choice.label(),
        executed_as=precision,
        latency_s=max(compute_s, transfer_s) + acc.layer_overhead_s,
        energy_j=energy_pj * 1e-12,
        weight_bytes=weight_bytes(spec, choice),
        activation_bytes=in_bytes + out_bytes,
        macs=macs,
        bitops=spec.macs * choice.bits * activation_bits(precision_of(choice.bits)),
        dram_bytes=dram,
        bound="compute" if compute_s >= transfer_s else "memory",
    )
