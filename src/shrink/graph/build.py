"""The channel dependency graph of a model: groups of coupled channels and where each lives in each parameter.

A *unit* is a set of channels that must be removed together (one channel of a residual stream in every layer that
reads or writes it; one attention head across q, k, v and the output projection). A *group* is the set of units
that touch exactly the same parameter dimensions (the channels of one residual stage, the heads of one attention
layer, the hidden units of one MLP): importance is computed, and the keep/prune decision made, once per group.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from shrink.graph.channels import ChannelState, MemberKey
from shrink.graph.rules import Propagator
from shrink.graph.trace import trace

__all__ = ["ChannelGroup", "DependencyGraph", "build_dependency_graph"]


@dataclass
class ChannelGroup:
    """Coupled units: ``index[key][p]`` is the unit (0..size-1) at position ``p`` of parameter dim ``key`` (-1:
    the position belongs to no unit of this group). ``roles[key]`` is "out" (a producing layer's filters), "in" (a
    consuming layer's input slices), "norm" (BatchNorm/LayerNorm scale) or "other"."""

    kind: Literal["channels", "heads"]
    size: int
    index: dict[MemberKey, np.ndarray]
    roles: dict[MemberKey, str]
    roots: np.ndarray = field(repr=False)

    @property
    def modules(self) -> list[str]:
        return sorted({k[0].rpartition(".")[0] for k in self.index})

    def keys(self, *roles: str) -> list[MemberKey]:
        return [k for k in self.index if not roles or self.roles[k] in roles]

    def unit_scores(self, per_position: dict[MemberKey, torch.Tensor]) -> torch.Tensor:
        """Sum per-position values (one tensor per member key) into one score per unit."""
        total = torch.zeros(self.size, dtype=torch.float64)
        for key, values in per_position.items():
            idx = torch.from_numpy(self.index[key])
            sel = idx >= 0
            total.index_add_(0, idx[sel], values.detach().double().cpu()[sel])
        return total


@dataclass
class DependencyGraph:
    """All prunable groups of a model, plus what was kept and why."""

    groups: list[ChannelGroup]
    #: (module path, number of heads, head_dim, head unit roots) for each attention head split
    head_splits: list[tuple[str, int, int, np.ndarray]]
    notes: list[str]
    skipped_ops: list[str]
    _roots: np.ndarray = field(repr=False)
    _members: dict[MemberKey, np.ndarray] = field(repr=False)

    def group_of(self, module: str) -> list[ChannelGroup]:
        return [g for g in self.groups if module in g.modules]

    def keep_indices(self, removed_roots: set[int]) -> dict[MemberKey, torch.Tensor]:
        """Positions to keep in every parameter dim that loses at least one channel."""
        out: dict[MemberKey, torch.Tensor] = {}
        removed = np.array(sorted(removed_roots), dtype=np.int64)
        for key, arr in self._members.items():
            roots = np.where(arr >= 0, self._roots[np.maximum(arr, 0)], -1)
            drop = np.isin(roots, removed) & (arr >= 0)
            if drop.any():
                out[key] = torch.from_numpy(np.nonzero(~drop)[0])
        return out


def _group(state: ChannelState, params: dict[str, torch.Tensor]) -> tuple[list[ChannelGroup], np.ndarray]:
    roots = state.roots() if state.parent else np.zeros(0, dtype=np.int64)
    frozen = {int(roots[i]) for i in state.frozen}
    for key, arr in state.members.items():
        if key[0] in state.opaque or key[0] not in params:
            frozen.update(int(r) for r in roots[arr[arr >= 0]])
    head_roots = {int(roots[ids[h, 0]]) for _, ids in state.head_splits for h in range(ids.shape[0])}
    signature: dict[int, set[MemberKey]] = defaultdict(set)
    for key, arr in state.members.items():
        for r in np.unique(roots[arr[arr >= 0]]).tolist():
            signature[r].add(key)
    by_sig: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for r, keys in signature.items():
        if r not in frozen:
            by_sig[(r in head_roots, *sorted(keys))].append(r)
    groups = []
    for sig, units in by_sig.items():
        units_arr = np.array(sorted(units), dtype=np.int64)
        lookup = {r: i for i, r in enumerate(units_arr.tolist())}
        index, roles = {}, {}
        for key in sig[1:]:
            arr = state.members[key]
            r = np.where(arr >= 0, roots[np.maximum(arr, 0)], -1)
            index[key] = np.array([lookup.get(int(x), -1) for x in r], dtype=np.int64)
            roles[key] = state.roles[key]
        groups.append(ChannelGroup("heads" if sig[0] else "channels", len(units_arr), index, roles, units_arr))
    return groups, roots


def build_dependency_graph(model: nn.Module, example_inputs: Any, on_unsupported: str = "error") -> DependencyGraph:
    """Trace ``model`` on ``example_inputs`` and find every group of coupled channels.

    ``on_unsupported="error"`` raises :class:`~shrink.errors.UnsupportedOpError` (naming the op and module path) for
    an op the graph cannot prune through; ``"skip"`` keeps the channels that op touches and lists it.
    """
    traced = trace(model, example_inputs)
    state = ChannelState()
    prop = Propagator(traced, state, on_unsupported)
    prop.run()
    params = dict(model.named_parameters()) | dict(model.named_buffers())
    groups, roots = _group(state, params)
    splits = [
        (path, ids.shape[0], ids.shape[1], np.array([int(roots[ids[h, 0]]) for h in range(ids.shape[0])]))
        for path, ids in state.head_splits
    ]
    return DependencyGraph(groups, splits, state.notes, prop.skipped, roots, state.members)
