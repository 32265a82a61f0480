"""One search trial's model: remove channels to each layer's kept width (P2's dependency graph, L1 importance and
slicing), optionally fine-tune, then prune/fake-quantize each layer to its sparsity and bit width."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shrink._parametrize import bake_parametrizations
from shrink.autosearch.apply import apply_policy, calibrate_inputs
from shrink.errors import ConfigError
from shrink.graph import build_dependency_graph
from shrink.hw.policy import LayerChoice, Policy
from shrink.pruning.structured import apply_removal, choose_units
from shrink.pruning.structured.importance import l1_importance
from shrink.train.loop import fit

__all__ = ["width_layers", "remove_channels", "compress"]


def _producers(model: nn.Module, example_inputs: Any):
    graph = build_dependency_graph(model, example_inputs, "skip")
    out = {}
    for g in graph.groups:
        if g.kind != "channels":
            continue
        producers = [k[0].rpartition(".")[0] for k in g.keys("out") if k[1] == 0 and k[0].endswith(".weight")]
        if len(producers) == 1:  # groups coupled across several producers (residuals) keep their width
            out[producers[0]] = g
    return graph, out


def width_layers(model: nn.Module, example_inputs: Any) -> list[str]:
    """Layers whose output channels can be removed alone (one producer in their channel group)."""
    return sorted(_producers(model, example_inputs)[1])


def remove_channels(model: nn.Module, widths: dict[str, float], example_inputs: Any, round_to: int = 1) -> nn.Module:
    """Keep ``widths[layer]`` of each named layer's output channels (lowest L1 filter norms removed), in place."""
    widths = {n: w for n, w in widths.items() if w < 1.0}
    if not widths:
        return model
    bake_parametrizations(model)
    graph, producers = _producers(model, example_inputs)
    missing = sorted(set(widths) - set(producers))
    if missing:
        raise ConfigError(
            f"search: cannot remove output channels of {missing} alone (no single-producer channel "
            "group; output layers and residual streams keep their width)"
        )
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    removed: set[int] = set()
    for name, width in widths.items():
        group = producers[name]
        (units,) = choose_units([group], [l1_importance(group, tensors)], 1.0 - width, "uniform", round_to)
        removed.update(int(r) for r in group.roots[units])
    apply_removal(model, graph, removed)
    return model


def compress(
    model: nn.Module,
    policy: Policy,
    *,
    example_inputs: Any,
    calibration: Sequence[Any],
    train: Sequence[Any] | None = None,
    finetune_epochs: int = 0,
    lr: float = 1e-3,
    seed: int = 0,
) -> nn.Module:
    """A copy of ``model`` with ``policy`` applied: channels removed, fine-tuned (if epochs), pruned and
    fake-quantized (simulated, with 8-bit inputs calibrated on ``calibration``)."""
    out = copy.deepcopy(model).eval()
    remove_channels(out, {n: c.width for n, c in policy.items()}, example_inputs)
    if finetune_epochs and any(c.width < 1.0 for c in policy.values()):
        if not train:
            raise ConfigError("search: fine-tuning after channel removal needs training data")
        torch.manual_seed(seed)
        fit(out, train, epochs=finetune_epochs, lr=lr, progress=False, desc="search trial")
    rest = {
        n: LayerChoice(bits=c.bits, sparsity=c.sparsity) for n, c in policy.items() if c.bits < 32 or c.sparsity > 0
    }
    if not rest:
        return out.eval()
    qparams = calibrate_inputs(out, [n for n, c in rest.items() if c.bits <= 8], calibration)
    return apply_policy(out, rest, input_qparams=qparams, inplace=True).eval()
