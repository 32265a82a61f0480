"""Calibration: run user data through a model with observers on chosen layers' inputs and outputs.

``with calibrating(model, layers, make_observer) as observers: ...`` attaches hooks; run batches with
:func:`run_calibration` (or your own loop) inside the block. Observed tensors with NaN/Inf, a model that rejects the
data (wrong shape) and empty data raise :class:`DataError` naming the layer or batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shrink.data import call_model, check_finite, split_batch
from shrink.errors import DataError
from shrink.quant.algorithms.observers import Observer

__all__ = ["calibrating", "run_calibration", "LayerObservers"]


class LayerObservers:
    """Input and output observers of one layer."""

    def __init__(self, inp: Observer, out: Observer | None) -> None:
        self.input, self.output = inp, out


@contextmanager
def calibrating(
    model: nn.Module,
    layers: dict[str, nn.Module],
    make_observer: Callable[[str], Observer],
    *,
    observe_outputs: bool = True,
    relu_layers: set[str] | frozenset[str] = frozenset(),
) -> Iterator[dict[str, LayerObservers]]:
    """Observe the first input (and the output) of each layer in ``layers`` while the block runs.

    Layers in ``relu_layers`` had their ReLU fused away; the hook applies it so downstream layers see the same
    activations as the original model.
    """
    observers = {
        name: LayerObservers(
            make_observer(f"{name}.input"), make_observer(f"{name}.output") if observe_outputs else None
        )
        for name in layers
    }
    handles = []
    for name, layer in layers.items():
        obs, relu = observers[name], name in relu_layers

        def pre(mod: nn.Module, args: tuple[Any, ...], obs: LayerObservers = obs, name: str = name) -> None:
            if not args or not isinstance(args[0], torch.Tensor):
                raise DataError(f"calibration: layer {name!r} got no tensor input")
            smooth = getattr(mod, "input_smooth", None)  # a smoothed layer quantizes its input after the division
            obs.input.update(args[0] * smooth if isinstance(smooth, torch.Tensor) else args[0])

        def post(
            mod: nn.Module,
            args: tuple[Any, ...],
            out: Any,
            obs: LayerObservers = obs,
            relu: bool = relu,
            name: str = name,
        ) -> Any:
            if relu:
                out = F.relu(out)
            if isinstance(out, torch.Tensor):
                check_finite(out, f"calibration: output of layer {name!r}")
            if obs.output is not None:  # the observer rejects NaN/Inf, naming the layer
                obs.output.update(out)
            return out

        handles += [layer.register_forward_pre_hook(pre), layer.register_forward_hook(post)]
    try:
        yield observers
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def run_calibration(model: nn.Module, data: Iterable[Any] | None, limit: int | None = None) -> int:
    """Run the inputs of each batch of ``data`` through ``model`` (eval mode); returns the number of batches."""
    if data is None:
        raise DataError("calibration data is required (pass calibration=<iterable of batches>)")
    if not isinstance(data, Iterable):
        raise DataError(f"calibration data must be an iterable of batches, got {type(data).__name__}")
    model.eval()
    n = 0
    for batch in data:
        if limit is not None and n >= limit:
            break
        inputs, _ = split_batch(batch)
        check_finite(inputs, f"calibration batch {n}")
        try:
            out = call_model(model, inputs)
        except DataError:
            raise
        except (RuntimeError, TypeError, ValueError) as exc:
            shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise DataError(f"calibration batch {n}: the model rejected inputs of shape {shape}: {exc}") from None
        check_finite(
            out if isinstance(out, (torch.Tensor, tuple, list, dict)) else None, f"calibration batch {n}: model output"
        )
        n += 1
    if n == 0:
        raise DataError("calibration data yielded no batch (empty calibration data)")
    return n
