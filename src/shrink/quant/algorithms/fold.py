"""Prepare a float model for quantization: fold BatchNorm into the preceding conv / linear and mark conv / linear
layers followed by a ReLU so the ReLU runs inside the quantized layer (one output grid, no lost resolution).

Patterns are found with ``torch.fx`` (module calls, including ``F.relu`` / ``torch.relu`` is *not* fused: only
``nn.ReLU`` modules can be replaced). Models fx cannot trace fall back to adjacency inside ``nn.Sequential``; the
fallback is reported in the returned notes.
"""

from __future__ import annotations

import torch
from torch import nn

from shrink.errors import ModelError

__all__ = ["bn_running_stats", "fold_bn_into", "find_patterns", "fold_and_fuse"]

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def bn_running_stats(bn: nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(running_mean, running_var)`` of ``bn``; a BN built with ``track_running_stats=False`` has none to fold."""
    mean, var = bn.running_mean, bn.running_var
    if mean is None or var is None:
        raise ModelError(
            f"{type(bn).__name__} has no running statistics (track_running_stats=False); it cannot be folded"
        )
    return mean, var


@torch.no_grad()
def fold_bn_into(layer: nn.Conv1d | nn.Conv2d | nn.Linear, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> None:
    """Fold ``bn`` (eval statistics) into ``layer``'s weight and bias, in place: y = gamma (Wx + b - mu) / s + beta."""
    running_mean, running_var = bn_running_stats(bn)
    std = torch.sqrt(running_var + bn.eps)
    gamma = bn.weight if bn.affine else torch.ones_like(std)
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    factor = gamma / std
    shape = [-1] + [1] * (layer.weight.dim() - 1)
    layer.weight.mul_(factor.reshape(shape))
    bias = layer.bias if layer.bias is not None else torch.zeros_like(std)
    new_bias = (bias - running_mean) * factor + beta
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias)
    else:
        layer.bias.copy_(new_bias)


def _fx_patterns(model: nn.Module) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    import torch.fx

    gm = torch.fx.symbolic_trace(model)
    mods = dict(model.named_modules())
    bn_pairs, relu_pairs = [], []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), _WEIGHTED) or len(node.users) != 1:
            continue
        nxt = next(iter(node.users))
        if nxt.op == "call_module" and isinstance(mods.get(nxt.target), _BN):
            bn_pairs.append((node.target, nxt.target))
            if len(nxt.users) != 1:
                continue
            nxt = next(iter(nxt.users))
        if nxt.op == "call_module" and isinstance(mods.get(nxt.target), nn.ReLU):
            relu_pairs.append((node.target, nxt.target))
    return bn_pairs, relu_pairs


def _sequential_patterns(model: nn.Module) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    bn_pairs, relu_pairs = [], []
    for prefix, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        items = list(seq.named_children())
        for i, (name, mod) in enumerate(items):
            if not isinstance(mod, _WEIGHTED):
                continue
            full = f"{prefix}.{name}" if prefix else name
            j = i + 1
            if j < len(items) and isinstance(items[j][1], _BN):
                bn_pairs.append((full, f"{prefix}.{items[j][0]}" if prefix else items[j][0]))
                j += 1
            if j < len(items) and isinstance(items[j][1], nn.ReLU):
                relu_pairs.append((full, f"{prefix}.{items[j][0]}" if prefix else items[j][0]))
    return bn_pairs, relu_pairs


def find_patterns(model: nn.Module) -> tuple[list[tuple[str, str]], list[tuple[str, str]], str]:
    """``(layer, bn)`` pairs, ``(layer, relu)`` pairs and how they were found ("fx" or "sequential")."""
    try:
        return (*_fx_patterns(model), "fx")
    except Exception:  # fx cannot trace data-dependent control flow (e.g. HF transformers); use the fallback
        return (*_sequential_patterns(model), "sequential")


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def fold_and_fuse(model: nn.Module) -> tuple[set[str], list[str]]:
    """Fold BNs and remove fused ReLUs in ``model`` (in place, eval mode). Returns the layers that now carry a
    ReLU and notes for the report."""
    model.eval()
    bn_pairs, relu_pairs, how = find_patterns(model)
    mods = dict(model.named_modules())
    for layer, bn in bn_pairs:
        weighted, norm = mods[layer], mods[bn]
        assert isinstance(weighted, _WEIGHTED) and isinstance(norm, _BN)  # find_patterns pairs only these types
        fold_bn_into(weighted, norm)
        _set(model, bn, nn.Identity())
    for _, relu in relu_pairs:
        _set(model, relu, nn.Identity())
    notes = [f"folded {len(bn_pairs)} BatchNorm layers, fused {len(relu_pairs)} ReLUs (patterns found by {how})"]
    return {layer for layer, _ in relu_pairs}, notes
