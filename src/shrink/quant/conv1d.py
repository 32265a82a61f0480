"""transformers' ``Conv1D`` (GPT-2 and its relatives: every projection of their blocks) as ``nn.Linear``.

``Conv1D`` is a Linear whose weight is stored transposed (``[in, out]``): ``y = x @ W + b``. The quantization stages
and kernels read ``nn.Linear`` layers, so such a model is turned into one with the same function first:
:func:`linear_from_conv1d`. Pruning needs no conversion (it slices ``Conv1D`` itself).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from shrink.errors import ModelError
from shrink.library_layers import is_conv1d
from shrink.quant.layers.convert import set_module

__all__ = ["linear_from_conv1d"]


def _as_linear(layer: nn.Module, name: str) -> nn.Linear:
    weight, bias = getattr(layer, "weight", None), getattr(layer, "bias", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ModelError(f"linear_from_conv1d: layer {name!r} has no 2-D weight")
    inputs, outputs = weight.shape
    linear = nn.Linear(inputs, outputs, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight.t())
        if bias is not None:
            linear.bias.copy_(bias)
    linear.train(layer.training)
    return linear


def linear_from_conv1d(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` (a copy unless ``inplace``) with every transformers ``Conv1D`` replaced by an ``nn.Linear`` of the
    same function, under the same name, so that the quantization stages (whose selectors match ``Linear``) can
    select it. A model with no ``Conv1D`` is a ModelError. The new layers' weights are the old ones transposed, so
    its state dict no longer loads into the original class: save it with :func:`shrink.save`, and :func:`shrink.load`
    with a factory of the original class rebuilds it (Linears included)."""
    names = [name for name, module in model.named_modules() if name and is_conv1d(module)]
    if not names:
        raise ModelError(f"linear_from_conv1d: {type(model).__name__} holds no transformers Conv1D layer")
    out = model if inplace else copy.deepcopy(model)
    for name in names:
        set_module(out, name, _as_linear(out.get_submodule(name), name))
    return out
