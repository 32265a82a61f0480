"""Intermediate-layer ("hint") distillation: which layers to match, forward hooks that capture their outputs, and
the learned projections (FitNets) that map student features to the teacher's width."""

from __future__ import annotations

from typing import Any, Literal

import pydantic
import torch
from torch import nn

from shrink.errors import ConfigError, DataError, SelectorError

__all__ = ["Hint", "FeatureTaps", "make_projection", "pick_output"]


class Hint(pydantic.BaseModel):
    """Match the output of student layer ``student`` to teacher layer ``teacher`` (module names).

    ``kind``: ``"fitnet"`` (MSE through a learned 1x1-conv / linear projection), ``"attention_map"`` (CNN attention
    transfer, no projection), ``"attention_probs"`` (KL between the attention probabilities a transformer
    self-attention module returns as its second output; head counts must match).
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    student: str
    teacher: str
    kind: Literal["fitnet", "attention_map", "attention_probs"] = "fitnet"
    weight: float = pydantic.Field(1.0, ge=0.0)


def pick_output(output: Any, kind: str, where: str) -> torch.Tensor:
    """The tensor a hint compares: the attention probabilities (second element) for ``attention_probs``, else the
    module's (first) output."""
    if isinstance(output, torch.Tensor):
        if kind == "attention_probs":
            raise DataError(
                f"{where}: module returns one tensor; attention_probs needs (output, attention) from "
                "an eager self-attention module"
            )
        return output
    if isinstance(output, (tuple, list)) and output:
        index = 1 if kind == "attention_probs" else 0
        if index >= len(output) or not isinstance(output[index], torch.Tensor):
            raise DataError(
                f"{where}: output has no attention probabilities (load the model with attn_implementation='eager')"
            )
        return output[index]
    raise DataError(f"{where}: cannot take a tensor from a module output of type {type(output).__name__}")


class FeatureTaps:
    """Forward hooks that keep the latest output of named modules; ``close()`` removes them."""

    def __init__(self, model: nn.Module, names: list[str], where: str) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise SelectorError(f"{where}: no module named {missing[0]!r} in {type(model).__name__}")
        self.outputs: dict[str, Any] = {}
        self._handles = [modules[n].register_forward_hook(self._keeper(n)) for n in dict.fromkeys(names)]

    def _keeper(self, name: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            self.outputs[name] = output

        return hook

    def take(self, name: str) -> Any:
        if name not in self.outputs:
            raise DataError(f"hint layer {name!r} did not run in the forward pass")
        return self.outputs[name]

    def clear(self) -> None:
        self.outputs.clear()

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.outputs.clear()


def make_projection(student_feature: torch.Tensor, teacher_feature: torch.Tensor, where: str) -> nn.Module:
    """FitNets regressor: a 1x1 convolution for (N, C, H, W) maps, a linear layer on the last axis otherwise."""
    s, t = student_feature, teacher_feature
    if s.dim() == 4 and t.dim() == 4:
        if s.shape[2:] != t.shape[2:]:
            raise ConfigError(
                f"{where}: spatial sizes differ (student {tuple(s.shape[2:])}, teacher "
                f"{tuple(t.shape[2:])}); choose layers at the same resolution"
            )
        return nn.Conv2d(s.shape[1], t.shape[1], kernel_size=1, bias=False)
    if s.shape[:-1] != t.shape[:-1]:
        raise ConfigError(f"{where}: feature shapes {tuple(s.shape)} and {tuple(t.shape)} differ beyond the last axis")
    return nn.Linear(s.shape[-1], t.shape[-1], bias=False)
