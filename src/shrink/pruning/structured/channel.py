"""Channel / head pruning: graph -> importance per group -> one keep/prune decision per group -> slicing."""

from __future__ import annotations

import copy
import warnings
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from shrink._parametrize import bake_parametrizations
from shrink.api import Context, implements
from shrink.data import call_model, split_batch
from shrink.errors import DataError, ModelError
from shrink.graph import ChannelGroup, DependencyGraph, build_dependency_graph, output_tensors
from shrink.pruning.structured import importance as imp
from shrink.pruning.structured import lasso
from shrink.pruning.structured.config import ChannelPruning
from shrink.pruning.structured.slicing import slice_module, update_head_attributes
from shrink.select import select_modules

__all__ = ["channel_prune", "choose_units", "apply_removal", "prunable_groups"]


def _keep_count(size: int, keep: int, round_to: int) -> int:
    if round_to > 1 and size >= round_to:
        keep = max(round_to, int(round(keep / round_to)) * round_to)
    return min(max(keep, 1), size)


def choose_units(
    groups: list[ChannelGroup],
    scores: list[torch.Tensor],
    ratio: float,
    scope: str,
    round_to: int = 1,
    max_group_ratio: float = 0.9,
) -> list[np.ndarray]:
    """Unit indices to remove in each group: the lowest-scored ones, ``ratio`` of each group ("uniform") or of all
    groups together after normalizing each group's scores by their mean ("global")."""
    if scope == "uniform":
        counts = [g.size - _keep_count(g.size, g.size - int(round(ratio * g.size)), round_to) for g in groups]
    else:
        norm = [s / (s.mean() + 1e-12) for s in scores]
        order = sorted((float(v), gi) for gi, s in enumerate(norm) for v in s.tolist())
        caps = [min(int(max_group_ratio * g.size), g.size - 1) for g in groups]
        counts, target = [0] * len(groups), int(round(ratio * sum(g.size for g in groups)))
        for _, gi in order:
            if sum(counts) >= target:
                break
            if counts[gi] < caps[gi]:
                counts[gi] += 1
        counts = [g.size - _keep_count(g.size, g.size - c, round_to) for g, c in zip(groups, counts, strict=True)]
    return [torch.argsort(s, stable=True)[:c].numpy() for s, c in zip(scores, counts, strict=True)]


def prunable_groups(model: nn.Module, graph: DependencyGraph, config: ChannelPruning) -> list[ChannelGroup]:
    """Groups of the kinds the config prunes whose every weight layer (producing or reading the channels) is chosen
    by the config's selector; norm layers and biases follow their channels."""
    allowed = set(select_modules(model, config.selector, where="channel_pruning.selector")) | {""}
    kinds = {"heads"} if config.prune_heads else set()
    kinds |= {"channels"} if config.prune_channels else set()
    return [
        g
        for g in graph.groups
        if g.kind in kinds and all(k[0].rpartition(".")[0] in allowed for k in g.keys("out", "in"))
    ]


def _taylor_grads(model: nn.Module, data: Any, batches: int, notes: list[str]) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    labelled = True
    for i, batch in enumerate(data):
        if i >= batches:
            break
        inputs, target = split_batch(batch)
        out = call_model(model, inputs)
        if target is not None and isinstance(out, torch.Tensor):
            loss = F.cross_entropy(out, target)
        else:
            labelled = False
            terms = [t.float().pow(2).mean() for t in output_tensors(out) if t.is_floating_point()]
            if not terms:
                raise DataError("taylor importance: the model returns no floating-point output to differentiate")
            loss = torch.stack(terms).sum()
        loss.backward()
    if not labelled:
        notes.append("channel_pruning(taylor): unlabelled data; gradients of the output energy were used")
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def _scores(
    model: nn.Module, groups: list[ChannelGroup], config: ChannelPruning, ctx: Context, samples: dict[str, torch.Tensor]
) -> list[torch.Tensor]:
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    grads: dict[str, torch.Tensor] = {}
    if config.importance == "taylor":
        grads = _taylor_grads(model, _data(ctx, "taylor"), config.batches, ctx.notes)
    out, fallback = [], 0
    for g in groups:
        s: torch.Tensor | None
        if config.importance == "l2":
            s = imp.l2_importance(g, tensors)
        elif config.importance == "bn_scale":
            s = imp.bn_scale_importance(g, tensors)
        elif config.importance == "taylor":
            s = imp.taylor_importance(g, tensors, grads)
        elif config.importance == "lasso":
            s = lasso.lasso_importance(g, model, samples)
        else:
            s = imp.l1_importance(g, tensors)
        if s is None:
            fallback += 1
            s = imp.l1_importance(g, tensors)
        out.append(s)
    if fallback:
        ctx.notes.append(
            f"channel_pruning({config.importance}): {fallback} group(s) without a norm layer / plain "
            "next layer were scored by L1 filter norm"
        )
    return out


def _data(ctx: Context, what: str) -> Any:
    data = ctx.train if ctx.train is not None else ctx.calibration
    if data is None:
        raise DataError(f"channel_pruning(importance={what!r}) needs data: pass train=... or calibration=...")
    return data


def apply_removal(model: nn.Module, graph: DependencyGraph, removed: set[int]) -> list[str]:
    """Slice every layer touched by the removed units (root ids) and fix attention head attributes."""
    per_module: dict[str, dict[str, dict[int, torch.Tensor]]] = defaultdict(lambda: defaultdict(dict))
    for (fqn, dim), idx in graph.keep_indices(removed).items():
        path, _, name = fqn.rpartition(".")
        per_module[path][name][dim] = idx
    for path, keep in per_module.items():
        slice_module(model.get_submodule(path) if path else model, keep)
    changed = []
    for path, heads, head_dim, roots in graph.head_splits:
        new = int(sum(int(r) not in removed for r in roots))
        if new != heads:
            attrs = update_head_attributes(model.get_submodule(path), heads, new, head_dim)
            if attrs:
                changed.append(f"{path}: {heads} -> {new} heads ({', '.join(attrs)})")
    return changed


def _warn_nothing_removed(n_groups: int, skipped: list[str]) -> str:
    """Warn that channel pruning left the model as it was, and why; returns the message (for the report's notes)."""
    why = (
        "no channel group can be pruned (every one feeds a model output, an op kept whole, or is excluded by the "
        "selector)"
        if n_groups == 0
        else f"no whole unit of its {n_groups} prunable group(s) is removed at these settings (ratio, head_ratio, "
        "round_to and max_group_ratio against the groups' sizes)"
    )
    extra = f"; ops kept whole: {', '.join(skipped)}" if skipped else ""
    message = f"channel_pruning removed nothing, the model is unchanged: {why}{extra}"
    warnings.warn(message, UserWarning, stacklevel=6)  # at the caller of shrink.prune
    return message


def _shapes(model: nn.Module, inputs: Any) -> list[tuple[int, ...]]:
    with torch.no_grad():
        return [tuple(t.shape) for t in output_tensors(call_model(model, inputs))]


@implements(ChannelPruning)
def channel_prune(model: nn.Module, config: ChannelPruning, ctx: Context) -> nn.Module:
    """Remove channels and heads physically; the result is a smaller dense model with the same outputs' shapes."""
    if ctx.example_inputs is None:
        raise DataError("channel_pruning needs example_inputs=... (a batch the model accepts) to trace the model")
    if any(hasattr(m, "parametrizations") for m in model.modules()):
        bake_parametrizations(model)
        ctx.notes.append("channel_pruning: masks were made permanent before removing channels")
    was_training = model.training
    model.eval()
    reference = _shapes(model, ctx.example_inputs)
    graph = build_dependency_graph(model, ctx.example_inputs, config.on_unsupported)
    ctx.notes += [f"channel_pruning skipped {s}" for s in graph.skipped_ops]
    groups = prunable_groups(model, graph, config)
    samples: dict[str, torch.Tensor] = {}
    if config.importance == "lasso":
        paths = sorted({p for g in groups for p, _ in lasso.consumers(g, model)})
        samples = lasso.collect_samples(model, paths, _data(ctx, "lasso"), config.batches)
        originals = {p: copy.deepcopy(lasso.weight_of(model.get_submodule(p)).detach()) for p in paths}
    scores = _scores(model, groups, config, ctx, samples)
    removed: set[int] = set()
    for kind, ratio in (
        ("channels", config.ratio),
        ("heads", config.head_ratio if config.head_ratio is not None else config.ratio),
    ):
        sel = [i for i, g in enumerate(groups) if g.kind == kind]
        cut = choose_units(
            [groups[i] for i in sel],
            [scores[i] for i in sel],
            ratio,
            config.scope,
            config.round_to if kind == "channels" else 1,
            config.max_group_ratio,
        )
        for i, units in zip(sel, cut, strict=True):
            removed.update(int(r) for r in groups[i].roots[units])
    if not removed and (config.ratio > 0 or (config.head_ratio or 0) > 0):
        ctx.notes.append(_warn_nothing_removed(len(groups), graph.skipped_ops))
    params_before = sum(p.numel() for p in model.parameters())
    changed = apply_removal(model, graph, removed)
    if config.importance == "lasso":
        _reconstruct(model, graph, removed, samples, originals, ctx)
    try:
        after = _shapes(model, ctx.example_inputs)
    except Exception as exc:
        raise ModelError(
            f"channel_pruning produced a model whose forward fails ({type(exc).__name__}: {exc}); "
            "please report this model"
        ) from exc
    if after != reference:
        raise ModelError(f"channel_pruning changed the output shapes {reference} -> {after}")
    params_after = sum(p.numel() for p in model.parameters())
    ctx.notes.append(
        f"channel_pruning: removed {len(removed)} channel/head units in {len(groups)} groups; "
        f"parameters {params_before:,} -> {params_after:,}"
    )
    ctx.notes += changed
    return model.train(was_training)


def _reconstruct(
    model: nn.Module,
    graph: DependencyGraph,
    removed: set[int],
    samples: dict[str, torch.Tensor],
    originals: dict[str, torch.Tensor],
    ctx: Context,
) -> None:
    keep = graph.keep_indices(removed)
    skipped = []
    for path, x in samples.items():
        idx = keep.get((f"{path}.weight", 1))
        rows = keep.get((f"{path}.weight", 0))
        if idx is not None and not lasso.reconstruct(model, path, x, originals[path], idx, rows):
            skipped.append(path)
    if skipped:
        ctx.notes.append(f"channel_pruning(lasso): too few samples to refit {', '.join(skipped)}; sliced only")
