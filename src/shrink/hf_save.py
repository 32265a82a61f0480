"""``save_pretrained`` on a transformers model whose layers shrink changed: refused with a clear error.

``from_pretrained`` rebuilds a model from its config, so a file whose weights no longer fit that architecture (pruned
widths, shrink's quantized layers, pruning parametrizations) loads with those layers initialised at random, and
transformers only logs them as missing. :func:`guard_save_pretrained` makes ``save_pretrained`` of every transformers
model inside a compressed model raise instead, naming the first weight that changed and the way that works:
``shrink.save`` / ``shrink.load``, or ONNX export.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from shrink.errors import ModelError

__all__ = ["weight_layout", "guard_save_pretrained"]


def weight_layout(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in ``model.state_dict()``."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


class _RefuseSavePretrained:
    def __init__(self, model_class: str, change: str) -> None:
        self.model_class, self.change = model_class, change

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise ModelError(
            f"save_pretrained: this {self.model_class} was compressed by shrink ({self.change}); transformers' "
            "from_pretrained would rebuild the original layers and load them with random weights. Save it with "
            "shrink.save(model, path) and load it with shrink.load(path, factory), or export it with "
            "shrink.export.onnx."
        )


def _first_change(before: dict[str, tuple[int, ...]], after: dict[str, tuple[int, ...]]) -> str | None:
    for name, shape in before.items():
        if name not in after:
            return f"weight {name!r} is gone"
        if after[name] != shape:
            return f"weight {name!r} is {after[name]} instead of {shape}"
    extra = next((n for n in after if n not in before), None)
    return None if extra is None else f"new tensor {extra!r}"


def guard_save_pretrained(model: nn.Module, before: dict[str, tuple[int, ...]]) -> None:
    """Make ``save_pretrained`` raise on every transformers model inside ``model`` when its weights differ from
    ``before`` (:func:`weight_layout` of the model the stage started from)."""
    change = _first_change(before, weight_layout(model))
    if change is None:
        return
    for module in model.modules():
        if callable(getattr(type(module), "save_pretrained", None)) and hasattr(type(module), "from_pretrained"):
            module.save_pretrained = _RefuseSavePretrained(type(module).__name__, change)  # type: ignore[method-assign,assignment]
