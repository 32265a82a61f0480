"""The hooks that make a model whose weights were cast to fp16 / bf16 (``FloatCast``) take and return fp32: its
floating inputs are cast on the way in and its outputs back to fp32. Kept apart from the quantize stage so that
``shrink.load`` reinstalls them on the model it rebuilds (the dtype is the model's ``shrink_float_cast`` attribute)."""

from __future__ import annotations

import copy
from collections.abc import MutableMapping
from typing import Any

import torch
from torch import nn

__all__ = ["install_float_cast", "reinstall_float_cast"]


def _cast_tree(x: Any, dtype: torch.dtype) -> Any:
    """``x`` with its floating tensors cast to ``dtype``, keeping the containers' types (a transformers
    ``ModelOutput`` stays one, a namedtuple stays that namedtuple)."""
    if isinstance(x, torch.Tensor):
        return x.to(dtype) if x.is_floating_point() else x
    if isinstance(x, MutableMapping):
        out = copy.copy(x)
        for k, v in x.items():
            out[k] = _cast_tree(v, dtype)
        return out
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # namedtuple
        return type(x)(*(_cast_tree(v, dtype) for v in x))
    if isinstance(x, (tuple, list)):
        return type(x)(_cast_tree(v, dtype) for v in x)
    return x


class _CastInputs:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return _cast_tree(args, self.dtype), _cast_tree(kwargs, self.dtype)


def _output_to_fp32(module: nn.Module, args: tuple, out: Any) -> Any:
    return _cast_tree(out, torch.float32)


def _hook(model: nn.Module, dtype: str) -> None:
    """Cast ``model``'s floating inputs to ``dtype`` and its outputs back to fp32 (once: a hooked model is left)."""
    if not any(isinstance(h, _CastInputs) for h in model._forward_pre_hooks.values()):
        model.register_forward_pre_hook(_CastInputs(getattr(torch, dtype)), with_kwargs=True)
        model.register_forward_hook(_output_to_fp32)


def install_float_cast(model: nn.Module, dtype: str) -> nn.Module:
    """Cast ``model``'s parameters and buffers to ``dtype`` (``"float16"`` / ``"bfloat16"``) in place, hook its
    inputs and outputs, and record the dtype as ``model.shrink_float_cast`` (saved with the model)."""
    model.to(getattr(torch, dtype))
    _hook(model, dtype)
    setattr(model, "shrink_float_cast", dtype)  # noqa: B010  (nn.Module types attributes as Tensor | Module)
    return model


def reinstall_float_cast(model: nn.Module) -> None:
    """Hook a model rebuilt from a file as :func:`install_float_cast` did, if it was cast (its weights already
    have the dtype)."""
    dtype = getattr(model, "shrink_float_cast", None)
    if dtype in ("float16", "bfloat16"):
        _hook(model, dtype)
