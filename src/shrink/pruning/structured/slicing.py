"""Per-layer slicing: physically remove channels from a layer's tensors and fix its shape attributes.

Each function takes the module and ``{tensor name: {dim: kept positions}}`` and edits the module in place. Modules
without a dedicated function (e.g. a container holding a class token) get their tensors sliced and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd

from shrink.errors import ModelError
from shrink.library_layers import is_conv1d

__all__ = ["memory_format_of", "slice_module", "slice_tensors", "SLICERS", "update_head_attributes"]

Keep = dict[str, dict[int, torch.Tensor]]


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """The memory format ``t`` is dense in: channels-last (4-D / 5-D) when it is laid out so and not also plainly
    contiguous, otherwise contiguous (the format a sliced copy gets, whatever strides ``t`` had)."""
    if not t.is_contiguous():
        if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
            return torch.channels_last
        if t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d):
            return torch.channels_last_3d
    return torch.contiguous_format


def _sliced(old: torch.Tensor, dims: dict[int, torch.Tensor]) -> torch.Tensor:
    """A fresh dense copy of ``old`` with only the kept positions, in ``old``'s memory format: index_select alone
    returns plain-contiguous tensors, which would silently turn a channels-last model into a slower mixed one."""
    new = old.detach()
    for dim, idx in dims.items():
        new = new.index_select(dim, idx.to(new.device))
    return new.clone(memory_format=memory_format_of(old))


def slice_tensors(module: nn.Module, keep: Keep) -> None:
    """Index-select each named parameter/buffer of ``module`` along the given dims (gradients are dropped); every
    result is a dense tensor of its own in the original's memory format. The sliced names are recorded in the
    module's ``shrink_sliced`` (comma-separated), so that :func:`shrink.load` can give them the saved shapes."""
    done = set(filter(None, str(getattr(module, "shrink_sliced", "")).split(",")))
    setattr(module, "shrink_sliced", ",".join(sorted(done | set(keep))))  # noqa: B010  (nn.Module types attributes as Tensor | Module)
    for name, dims in keep.items():
        if name in module._parameters and (param := module._parameters[name]) is not None:
            module._parameters[name] = nn.Parameter(_sliced(param, dims), requires_grad=param.requires_grad)
        elif name in module._buffers and (buf := module._buffers[name]) is not None:
            module._buffers[name] = _sliced(buf, dims)
        else:
            raise ModelError(f"{type(module).__name__} has no parameter or buffer {name!r} to slice")


def _conv(m: _ConvNd, keep: Keep) -> None:
    """Plain convs lose filters / input slices; grouped (and depthwise) ones lose whole groups, since the graph
    makes each group's input and output channels one unit — their per-group widths never change."""
    per_out, groups = m.out_channels // m.groups, m.groups
    if groups > 1 and 1 in keep.get("weight", {}):
        raise ModelError(f"cannot slice the per-group input channels of grouped convolution {m}")
    slice_tensors(m, keep)
    m.out_channels = m.weight.shape[0]
    if groups > 1:
        if m.out_channels % per_out:
            raise ModelError(f"{m}: {m.out_channels} output channels left, not whole groups of {per_out}")
        m.groups = m.out_channels // per_out
    m.in_channels = m.weight.shape[1] * m.groups


def _linear(m: nn.Linear, keep: Keep) -> None:
    slice_tensors(m, keep)
    m.out_features, m.in_features = m.weight.shape


def _batch_norm(m: _NormBase, keep: Keep) -> None:
    slice_tensors(m, keep)
    ref = m.weight if m.weight is not None else m.running_mean
    m.num_features = ref.shape[0]


def _layer_norm(m: nn.LayerNorm, keep: Keep) -> None:
    slice_tensors(m, keep)
    m.normalized_shape = (m.weight.shape[0],) if m.weight is not None else m.normalized_shape


def _embedding(m: nn.Embedding, keep: Keep) -> None:
    slice_tensors(m, keep)
    m.num_embeddings, m.embedding_dim = m.weight.shape


def _hf_conv1d(m: Any, keep: Keep) -> None:  # transformers' Conv1D: weight [in, out]
    slice_tensors(m, keep)
    m.nx, m.nf = m.weight.shape


#: module class -> slicer; each slicer takes its own class (looked up along the MRO by slice_module)
SLICERS: dict[type[nn.Module], Callable[[Any, Keep], None]] = {
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.Conv3d: _conv,
    nn.Linear: _linear,
    nn.BatchNorm1d: _batch_norm,
    nn.BatchNorm2d: _batch_norm,
    nn.BatchNorm3d: _batch_norm,
    nn.LayerNorm: _layer_norm,
    nn.Embedding: _embedding,
}


def slice_module(module: nn.Module, keep: Keep) -> None:
    """Remove channels from ``module``: keep only positions ``keep[name][dim]`` of each tensor."""
    for cls in type(module).__mro__:
        if cls in SLICERS:
            return SLICERS[cls](module, keep)
    if is_conv1d(module):
        return _hf_conv1d(module, keep)
    return slice_tensors(module, keep)


HEAD_COUNT_ATTRS = ("num_attention_heads", "num_heads", "n_head", "n_heads")
HEAD_WIDTH_ATTRS = ("all_head_size", "split_size", "embed_dim", "inner_dim")


def update_head_attributes(module: nn.Module, old_heads: int, new_heads: int, head_dim: int) -> list[str]:
    """Set an attention module's head count (and heads x head_dim width) attributes; returns what changed."""
    changed = []
    for attr in HEAD_COUNT_ATTRS:
        if getattr(module, attr, None) == old_heads:
            setattr(module, attr, new_heads)
            changed.append(attr)
    for attr in HEAD_WIDTH_ATTRS:
        if getattr(module, attr, None) == old_heads * head_dim:
            setattr(module, attr, new_heads * head_dim)
            changed.append(attr)
    return changed
