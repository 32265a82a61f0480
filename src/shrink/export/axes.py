"""Which axes of an exported graph's inputs and outputs stay dynamic.

Axis 0 is the batch for most models, and a dict input (token ids, masks) has its sequence on axis 1. A model with
recurrent layers is looked at more closely: a ``batch_first=False`` LSTM / GRU takes ``(time, batch, features)``, and
a time series has no fixed length, so for such a model the batch axis is found by running it (the outputs on a batch
doubled along an axis must be the outputs doubled), the other of the first two axes is the sequence, and each output
axis that grows with the batch or the sequence is dynamic too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

__all__ = ["dynamic_axes"]

Axes = dict[int, str]


def dynamic_axes(
    model: nn.Module, args: tuple[Any, ...], input_names: list[str], output_names: list[str], keywords: bool
) -> dict[str, Axes]:
    """``torch.onnx.export``'s ``dynamic_axes`` for ``model`` called on ``args`` (positionally; ``keywords``: they came
    from a dict). Outputs are matched to ``output_names`` in the order of their tensors."""
    if keywords or not any(isinstance(m, nn.RNNBase) for m in model.modules()):
        axes = {0: "batch", 1: "sequence"} if keywords else {0: "batch"}
        found = {
            n: {a: label for a, label in axes.items() if a < _rank(x)} for n, x in zip(input_names, args, strict=True)
        }
        found.update({n: {0: "batch"} for n in output_names})
        return found
    return _recurrent_axes(model, args, input_names, output_names)


def _rank(x: Any) -> int:
    return x.dim() if isinstance(x, torch.Tensor) else 1


def _outputs(model: nn.Module, args: tuple[Any, ...]) -> list[torch.Tensor] | None:
    """The output tensors of ``model(*args)``, or None when the model rejects those inputs."""
    try:
        with torch.no_grad():
            out = model(*args)
    except Exception:  # noqa: BLE001 - a shape the model cannot take only means that axis is not dynamic
        return None
    return [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]


def _grown(args: tuple[Any, ...], axis: int, doubled: bool, min_rank: int = 0) -> tuple[Any, ...]:
    """Each tensor of ``args`` with rank > ``axis`` (and at least ``min_rank``) doubled along ``axis``, or grown by its
    first slice."""

    def grow(x: Any) -> Any:
        if not isinstance(x, torch.Tensor) or x.dim() <= axis or x.dim() < min_rank:
            return x
        return torch.cat([x, x if doubled else x.narrow(axis, 0, 1)], axis)

    return tuple(grow(x) for x in args)


def _changed_axes(before: list[torch.Tensor], after: list[torch.Tensor] | None) -> list[set[int]] | None:
    if after is None or len(after) != len(before):
        return None
    if any(a.dim() != b.dim() for a, b in zip(after, before, strict=True)):
        return None
    return [{i for i in range(b.dim()) if a.shape[i] != b.shape[i]} for a, b in zip(after, before, strict=True)]


def _batch_axis(model: nn.Module, args: tuple[Any, ...], ref: list[torch.Tensor]) -> int:
    """1 when the model treats axis 1 of its inputs as the batch (each output doubled along one axis when the inputs
    are doubled along axis 1: samples are independent), else 0."""
    if all(m.batch_first for m in model.modules() if isinstance(m, nn.RNNBase)):
        return 0
    if not all(x.dim() >= 2 for x in args if isinstance(x, torch.Tensor)):
        return 0
    doubled = _outputs(model, _grown(args, 1, doubled=True))
    changed = _changed_axes(ref, doubled)
    if doubled is None or changed is None or any(len(c) != 1 for c in changed):
        return 0
    for out, new, axes in zip(ref, doubled, changed, strict=True):
        (axis,) = axes
        if not torch.allclose(torch.cat([out, out], axis), new, rtol=1e-4, atol=1e-5):
            return 0
    return 1


def _recurrent_axes(
    model: nn.Module, args: tuple[Any, ...], input_names: list[str], output_names: list[str]
) -> dict[str, Axes]:
    was_training = model.training
    model.eval()
    try:
        ref = _outputs(model, args)
        if ref is None:  # let the exporter report the failure
            return {n: {0: "batch"} for n in [*input_names, *output_names]}
        batch = _batch_axis(model, args, ref)
        labels = {batch: "batch", 1 - batch: "sequence"}
        inputs: dict[str, Axes] = {n: {} for n in input_names}
        outputs: list[Axes] = [{} for _ in ref]
        for axis, label in labels.items():
            min_rank = 3 if label == "sequence" else 0  # a rank-2 input's axis 1 is its features, not a sequence
            changed = _changed_axes(ref, _outputs(model, _grown(args, axis, doubled=False, min_rank=min_rank)))
            if changed is None:  # the model cannot take another size on this axis: it stays fixed
                continue
            for name, x in zip(input_names, args, strict=True):
                if _rank(x) > axis and _rank(x) >= min_rank:
                    inputs[name][axis] = label
            for found, axes in zip(outputs, changed, strict=True):
                found.update(dict.fromkeys(axes, label))
    finally:
        model.train(was_training)
    named = dict(zip(output_names, outputs, strict=False))  # a nested output: names for the first ones
    return {**inputs, **{n: named.get(n, {0: "batch"}) for n in output_names}}
