"""Apply a per-layer policy to a model copy: magnitude-prune each layer to its sparsity (P1's masks), fake-quantize
its weights per channel to its bit width and its input activations to 8 bits (Q1's qparams / observers).

The result runs fp32 kernels on values on the quantized grids: a simulation for accuracy, flagged as such in
``shrink_execution``. Real integer execution on the CPU goes through :mod:`shrink.hw.ort_int8`.
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
from shrink.prune.magnitude import MagnitudePruning, magnitude_masks
from shrink.quant.observers import MinMaxObserver
from shrink.quant.qparams import QParams, fake_quantize, qparams_for_tensor

__all__ = ["apply_policy", "quantize_weight", "prune_weight", "ACTIVATION_BITS", "calibrate_inputs", "InputFakeQuant"]

#: input activations of layers at <= 8 bits are fake-quantized to 8 bits (W{b}A8)
ACTIVATION_BITS = 8


def quantize_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """``weight`` on a symmetric per-output-channel ``bits``-bit integer grid (32: unchanged)."""
    if bits >= 32:
        return weight
    qp = qparams_for_tensor(weight.detach(), bits, symmetric=True, axis=0)
    return fake_quantize(weight.detach(), qp)


def prune_weight(module: nn.Module, sparsity: float) -> torch.Tensor:
    """``module.weight`` with its smallest-magnitude ``sparsity`` fraction zeroed (per layer)."""
    weight: torch.Tensor = module.weight  # type: ignore[assignment]
    if sparsity <= 0:
        return weight.detach()
    mask = magnitude_masks({"m": module}, MagnitudePruning(sparsity=sparsity, scope="layer"))["m"]
    return weight.detach() * mask


class InputFakeQuant:
    """Forward pre-hook fake-quantizing a layer's input on a fixed grid from calibration."""

    def __init__(self, qp: QParams) -> None:
        self.qp = qp

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (fake_quantize(args[0], self.qp), *args[1:])


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
    """``model`` (a copy unless ``inplace``) with each named layer pruned and fake-quantized as ``policy`` says.

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
        _apply_choice(modules[name], choice, (input_qparams or {}).get(name))
    bits = sorted({c.bits for c in policy.values()})
    out.shrink_execution = f"fake-quant, per-layer bits {bits}, A{ACTIVATION_BITS} (simulated)"  # type: ignore
    return out


def _apply_choice(module: nn.Module, choice: LayerChoice, input_qp: QParams | None) -> None:
    with torch.no_grad():
        w = quantize_weight(prune_weight(module, choice.sparsity), choice.bits)
        module.weight.copy_(w)  # type: ignore[operator]
    if input_qp is not None and choice.bits <= 8:
        module.register_forward_pre_hook(InputFakeQuant(input_qp))
