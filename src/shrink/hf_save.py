"""``save_pretrained`` on a transformers model whose layers shrink changed: refused with a clear error.

``from_pretrained`` rebuilds a model from its config, so a file whose weights no longer fit that architecture (pruned
widths, shrink's quantized layers, pruning parametrizations) loads with those layers initialised at random, and
transformers only logs them as missing. :func:`guard_save_pretrained` gives every transformers model inside a
compressed model a ``save_pretrained`` that compares its weights with the ones it had before the stage when it is
called: unchanged (say after ``make_permanent`` turned pruning masks back into plain weights), it saves the
Hugging Face way; changed, it raises, naming the first weight that changed and the way that works: ``shrink.save`` /
``shrink.load``, or ONNX export.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from shrink.errors import ModelError

__all__ = ["weight_layout", "guard_save_pretrained"]

Layout = dict[str, tuple[int, ...]]


def weight_layout(model: nn.Module) -> Layout:
    """Name -> shape of every tensor in ``model.state_dict()``."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def first_change(before: Layout, after: Layout) -> str | None:
    """The first difference between two layouts, in words (None: the same names and shapes)."""
    for name, shape in before.items():
        if name not in after:
            return f"weight {name!r} is gone"
        if after[name] != shape:
            return f"weight {name!r} is {after[name]} instead of {shape}"
    extra = next((n for n in after if n not in before), None)
    return None if extra is None else f"new tensor {extra!r}"


class _CheckedSavePretrained:
    """``save_pretrained`` of one transformers model: the real one while its layout is ``before``, else an error."""

    def __init__(self, module: nn.Module, before: Layout) -> None:
        self.module, self.before = module, before

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        change = first_change(self.before, weight_layout(self.module))
        if change is None:
            return type(self.module).save_pretrained(self.module, *args, **kwargs)  # type: ignore[attr-defined]
        raise ModelError(
            f"save_pretrained: this {type(self.module).__name__} was compressed by shrink ({change}); transformers' "
            "from_pretrained would rebuild the original layers and load them with random weights. Save it with "
            "shrink.save(model, path) and load it with shrink.load(path, factory), or export it with "
            "shrink.export.onnx."
        )


def guard_save_pretrained(model: nn.Module, before: Layout) -> None:
    """Give every transformers model inside ``model`` a checked ``save_pretrained`` when ``model``'s weights differ
    from ``before`` (:func:`weight_layout` of the model the stage started from, whose module names ``model``
    keeps)."""
    if first_change(before, weight_layout(model)) is None:
        return
    for name, module in model.named_modules():
        kind = type(module)
        if not (callable(getattr(kind, "save_pretrained", None)) and hasattr(kind, "from_pretrained")):
            continue
        if isinstance(module.__dict__.get("save_pretrained"), _CheckedSavePretrained):
            continue  # guarded by an earlier stage against the layout it had before that stage
        prefix = f"{name}." if name else ""
        own = {k[len(prefix) :]: v for k, v in before.items() if k.startswith(prefix)}
        module.save_pretrained = _CheckedSavePretrained(module, own)  # type: ignore[method-assign,assignment]
