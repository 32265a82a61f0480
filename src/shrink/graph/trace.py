"""Trace any model to an ATen graph with torch.export (non-strict), keeping module paths and parameter names.

``torch.export`` works on plain PyTorch models and on Hugging Face transformers models alike (``transformers.utils.fx``
is gone in transformers 5.x). The model is wrapped so that its outputs (tensors, tuples, dicts, ``ModelOutput``s with
caches) become a flat tuple of tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from shrink.errors import DataError, ModelError

__all__ = ["TracedGraph", "trace", "split_inputs", "output_tensors"]

_PREFIX = "model."


def output_tensors(out: Any) -> list[torch.Tensor]:
    """The tensors in a model output, in a stable order (tuples, lists, dicts and ``ModelOutput`` objects)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping) or hasattr(out, "to_tuple"):
        return [t for v in out.values() for t in output_tensors(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in output_tensors(v)]
    return []


class _Flat(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        return tuple(output_tensors(self.model(*args, **kwargs)))


def split_inputs(example_inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` for a model call: a dict is keyword arguments, a tuple/list positional, else one argument."""
    if example_inputs is None:
        raise DataError("structured pruning needs example_inputs=... to trace the model")
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    return (example_inputs,), {}


@dataclass
class TracedGraph:
    """An exported ATen graph plus the names it needs: parameter/buffer FQNs of placeholders, module path of ops."""

    graph: fx.Graph
    #: placeholder name -> parameter or buffer fully-qualified name in the traced model
    tensors: dict[str, str]

    @staticmethod
    def module_path(node: fx.Node) -> str:
        """Dotted path of the innermost module that ran ``node`` ("" for the model itself)."""
        stack = node.meta.get("nn_module_stack") or {}
        if not stack:
            return ""
        path = list(stack.values())[-1][0]
        return path[len(_PREFIX) :] if path.startswith(_PREFIX) else ("" if path == "model" else path)


def trace(model: nn.Module, example_inputs: Any) -> TracedGraph:
    """Export ``model`` (in eval mode, restored afterwards) on ``example_inputs``; raise ModelError if it fails."""
    args, kwargs = split_inputs(example_inputs)
    was_training = model.training
    model.eval()
    try:
        ep = torch.export.export(_Flat(model), args, kwargs, strict=False)
    except Exception as exc:  # export raises many internal error types; they all mean "cannot trace"
        raise ModelError(
            f"cannot trace {type(model).__name__} with torch.export: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    finally:
        model.train(was_training)
    sig = ep.graph_signature
    named = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    tensors = {k: v[len(_PREFIX) :] if v.startswith(_PREFIX) else v for k, v in named.items()}
    return TracedGraph(graph=ep.graph, tensors=tensors)
