"""Bake parametrizations (masks, ...) into plain weights without touching any other model.

``torch.nn.utils.parametrize.remove_parametrizations`` deletes the property from the dynamically created
``Parametrized<Cls>`` class, which ``copy.deepcopy`` shares between a model and its copies: removing it from one
copy breaks the others. Here the module's class is switched back to the original one instead.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["bake_parametrizations", "baked_copy"]


def bake_parametrizations(model: nn.Module) -> nn.Module:
    """Replace every parametrized tensor of ``model`` (in place) by a plain parameter holding its current value."""
    for module in model.modules():
        if not parametrize.is_parametrized(module):
            continue
        values = {}
        plists: nn.ModuleDict = module.parametrizations  # type: ignore[assignment]
        with torch.no_grad():
            for name, plist in plists.items():
                values[name] = (getattr(module, name).detach().clone(), bool(plist.original.requires_grad))
        del module._modules["parametrizations"]
        module.__class__ = module.__class__.__bases__[0]
        for name, (value, requires_grad) in values.items():
            module.register_parameter(name, nn.Parameter(value, requires_grad=requires_grad))
    return model


def baked_copy(model: nn.Module) -> nn.Module:
    """``model`` itself if nothing is parametrized, else a deep copy with parametrizations baked in."""
    if not any(parametrize.is_parametrized(m) for m in model.modules()):
        return model
    return bake_parametrizations(copy.deepcopy(model))
