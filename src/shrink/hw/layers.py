"""The compute layers of a model as the cost model sees them: shapes, MACs, weights, activations.

Layers are found by running ``example_inputs`` once with forward hooks on every Conv1d/Conv2d/Linear, so the shapes
are the real ones for that input (batch size included).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from shrink._parametrize import baked_copy
from shrink.data import call_model
from shrink.errors import ModelError

__all__ = ["LayerSpec", "trace_layers", "scaled", "input_widths"]

_COMPUTE = (nn.Conv1d, nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class LayerSpec:
    """One Conv/Linear layer for one input. ``in_shape``/``out_shape`` include the batch dimension."""

    name: str
    kind: str  # "conv1d" | "conv2d" | "linear"
    in_channels: int
    out_channels: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    groups: int
    bias: bool
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def weight_count(self) -> int:
        k = 1
        for d in self.kernel:
            k *= d
        return self.out_channels * (self.in_channels // self.groups) * k

    @property
    def in_elems(self) -> int:
        return _prod(self.in_shape)

    @property
    def out_elems(self) -> int:
        return _prod(self.out_shape)

    @property
    def macs(self) -> int:
        k = 1
        for d in self.kernel:
            k *= d
        return self.out_elems * (self.in_channels // self.groups) * k

    def key(self) -> str:
        """A string naming the layer's configuration (not its name): equal keys cost the same."""
        return (
            f"{self.kind}:i{self.in_channels}:o{self.out_channels}:k{'x'.join(map(str, self.kernel))}"
            f":s{'x'.join(map(str, self.stride))}:p{'x'.join(map(str, self.padding))}:g{self.groups}"
            f":b{int(self.bias)}:in{'x'.join(map(str, self.in_shape))}"
        )


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _spec(name: str, m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LayerSpec:
    if isinstance(m, nn.Linear):
        return LayerSpec(
            name,
            "linear",
            m.in_features,
            m.out_features,
            (1,),
            (1,),
            (0,),
            1,
            m.bias is not None,
            tuple(x.shape),
            tuple(y.shape),
        )
    assert isinstance(m, (nn.Conv1d, nn.Conv2d))
    if isinstance(m.padding, str):
        raise ModelError(f"cost model: layer {name!r} uses padding={m.padding!r}; give explicit padding")
    kind = "conv1d" if isinstance(m, nn.Conv1d) else "conv2d"
    return LayerSpec(
        name,
        kind,
        m.in_channels,
        m.out_channels,
        tuple(m.kernel_size),
        tuple(m.stride),
        tuple(m.padding),
        m.groups,
        m.bias is not None,
        tuple(x.shape),
        tuple(y.shape),
    )


def trace_layers(model: nn.Module, example_inputs: Any) -> list[LayerSpec]:
    """Every Conv/Linear layer of ``model`` in execution order, with its shapes for ``example_inputs``."""
    model = baked_copy(model)
    specs: dict[str, LayerSpec] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, _COMPUTE):

            def hook(m: nn.Module, args: tuple[Any, ...], out: Any, name: str = name) -> None:
                if name not in specs:  # a layer run twice (weight sharing) is costed for its first call only
                    specs[name] = _spec(name, m, args[0], out)

            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            call_model(model, example_inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if not specs:
        raise ModelError(f"cost model: {type(model).__name__} has no Conv/Linear layer that runs on the example input")
    return list(specs.values())


def scaled(spec: LayerSpec, in_width: float, out_width: float) -> LayerSpec:
    """The layer with ``in_width``/``out_width`` of its input/output channels kept (channel pruning)."""
    cin = max(1, round(spec.in_channels * in_width))
    cout = max(1, round(spec.out_channels * out_width))
    groups = spec.groups if spec.groups == 1 else max(1, round(spec.groups * out_width))
    channel_dim = -1 if spec.kind == "linear" else 1
    in_shape, out_shape = list(spec.in_shape), list(spec.out_shape)
    in_shape[channel_dim], out_shape[channel_dim] = cin, cout
    return replace(
        spec, in_channels=cin, out_channels=cout, groups=groups, in_shape=tuple(in_shape), out_shape=tuple(out_shape)
    )


def input_widths(specs: list[LayerSpec], out_widths: dict[str, float]) -> dict[str, float]:
    """Fraction of each layer's input channels left when earlier layers keep ``out_widths`` of their outputs.

    Without a dependency graph this follows execution order: a layer's input comes from the closest earlier layer
    whose output channels equal its input channels (conv) or divide its input features (linear after a flatten).
    Layers whose producer is not found keep their full input.
    """
    widths: dict[str, float] = {}
    for i, spec in enumerate(specs):
        widths[spec.name] = 1.0
        for prev in reversed(specs[:i]):
            fits = (
                prev.out_channels == spec.in_channels
                if spec.kind != "linear"
                else spec.in_channels % prev.out_channels == 0
            )
            if fits:
                widths[spec.name] = out_widths.get(prev.name, 1.0)
                break
    return widths
