"""Apply a per-layer policy to a model copy: magnitude-prune each layer to its sparsity (P1's masks), then store its
weights at its bit width — a :class:`~shrink.quant.layers.lowbit.LowBitLinear` / ``LowBitConv`` with per-channel integer
codes at 2-8 bits (input activations on a calibrated 8-bit grid, Q1's observers) or fp16 weights at 16 bits; 32-bit
layers stay float (pruned).

The model the sensitivities measure, the one the stage returns and the one :func:`shrink.save` writes (codes
bit-packed at their width) and :func:`shrink.load` rebuilds are the same. It runs fp32 kernels on values on the
quantized grids: a simulation for accuracy, flagged as such in ``shrink_execution``. Real integer execution on the
CPU goes through :mod:`shrink.hw.ort_int8`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from shrink._parametrize import baked_copy
from shrink.data import feed_inputs
from shrink.errors import ConfigError
from shrink.hw.policy import LayerChoice, Policy
from shrink.pruning.magnitude import MagnitudePruning, magnitude_masks
from shrink.quant.algorithms.observers import MinMaxObserver
from shrink.quant.layers.convert import set_module
from shrink.quant.layers.lowbit import lowbit_layer
from shrink.quant.numerics.qparams import QParams, fake_quantize, qparams_for_tensor

__all__ = ["apply_policy", "quantize_weight", "prune_weight", "ACTIVATION_BITS", "calibrate_inputs"]

#: input activations of layers at <= 8 bits are fake-quantized to 8 bits (W{b}A8)
ACTIVATION_BITS = 8


def quantize_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """``weight`` as :func:`apply_policy` stores it: on a symmetric per-output-channel ``bits``-bit integer grid
    (2-8), rounded to fp16 (16), unchanged (32)."""
    if bits >= 32:
        return weight
    if bits == 16:
        return weight.detach().half().float()
    qp = qparams_for_tensor(weight.detach(), bits, symmetric=True, axis=0)
    return fake_quantize(weight.detach(), qp)


def prune_weight(module: nn.Module, sparsity: float) -> torch.Tensor:
    """``module.weight`` with its smallest-magnitude ``sparsity`` fraction zeroed (per layer)."""
    weight: torch.Tensor = module.weight  # type: ignore[assignment]
    if sparsity <= 0:
        return weight.detach()
    mask = magnitude_masks({"m": module}, MagnitudePruning(sparsity=sparsity, scope="layer"))["m"]
    return weight.detach() * mask


def _observe_input(observer: MinMaxObserver) -> Callable[[nn.Module, tuple[Any, ...]], None]:
    """A forward pre-hook that feeds a layer's input to ``observer``."""
    return lambda module, args: observer.update(args[0])


def calibrate_inputs(
    model: nn.Module, names: Iterable[str], data: Iterable[Any], batches: int = 4
) -> dict[str, QParams]:
    """Asymmetric 8-bit min-max grids of the inputs of the named layers over ``batches`` batches of ``data``."""
    observers = {n: MinMaxObserver(ACTIVATION_BITS, symmetric=False, signed=False, name=f"{n}.input") for n in names}
    feed_inputs(model, data, batches, {n: _observe_input(obs) for n, obs in observers.items()})
    return {n: o.qparams() for n, o in observers.items()}


def apply_policy(
    model: nn.Module, policy: Policy, *, input_qparams: dict[str, QParams] | None = None, inplace: bool = False
) -> nn.Module:
    """``model`` (a copy unless ``inplace``) with each named layer pruned and stored at its bit width as ``policy``
    says: layers below 32 bits become low-bit layers (see the module docstring), 32-bit ones stay float.

    ``input_qparams`` (from :func:`calibrate_inputs`) adds 8-bit input fake-quant to layers at <= 8 bits; without
    it only weights are quantized. Channel widths < 1 are not applied here (raise): they need structured pruning.
    """
    out = model if inplace else copy.deepcopy(baked_copy(model))
    modules = dict(out.named_modules())
    for name, choice in policy.items():
        if name not in modules or not hasattr(modules[name], "weight"):
            raise ConfigError(f"apply_policy: no layer with weights named {name!r}")
        if choice.width < 1.0:
            raise ConfigError(
                f"apply_policy: layer {name!r} asks for width {choice.width}; channel removal is done "
                "by structured pruning, not by apply_policy"
            )
        _apply_choice(out, name, modules[name], choice, (input_qparams or {}).get(name))
    bits = sorted({c.bits for c in policy.values()})
    execution = (
        f"per-layer weight bits {bits} (2-8: int codes, 16: fp16; stored bit-packed), dequantized to fp32 "
        f"kernels, A{ACTIVATION_BITS} fake-quant inputs (simulated)"
    )
    out.shrink_execution = execution  # type: ignore[assignment]
    return out


def _apply_choice(
    model: nn.Module, name: str, module: nn.Module, choice: LayerChoice, input_qp: QParams | None
) -> None:
    weight = prune_weight(module, choice.sparsity)
    if choice.bits >= 32:
        with torch.no_grad():
            module.weight.copy_(weight)  # type: ignore[operator]
        return
    set_module(model, name, lowbit_layer(module, weight, choice.bits, input_qp if choice.bits <= 8 else None))
