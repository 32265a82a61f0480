"""Channel bookkeeping for the dependency graph.

Every channel a layer produces gets an integer id. Ops that tie channels together (a residual addition, attention
over the heads of q/k/v) union ids in a union-find; the connected components are the *coupled channel units* that
must be kept or removed together. Each parameter dimension a channel touches is a *member*: an array over that
dimension holding the channel id at each position (-1 where untracked). Channels that must never be removed (model
outputs, operands of ops that mix channels in ways shrink does not slice) are *frozen*.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Channels", "ParamRef", "ChannelState", "MemberKey"]

#: (parameter/buffer FQN, dimension)
MemberKey = tuple[str, int]


@dataclass(frozen=True)
class Channels:
    """The tracked channels of a tensor.

    ``ids`` is 1-D (one id per channel, along tensor axis ``axes[0]``; each channel covers ``rep`` consecutive
    positions, e.g. after flattening C x H x W) or 2-D ``[heads, head_dim]`` for attention tensors, whose heads lie
    along ``axes[0]`` and head_dim along ``axes[1]`` (``None`` when the tensor has no head_dim axis, as attention
    scores).
    """

    ids: np.ndarray
    axes: tuple[int | None, ...]
    rep: int = 1

    @property
    def heads(self) -> bool:
        return self.ids.ndim == 2

    def moved(self, axes: tuple[int | None, ...]) -> Channels:
        return Channels(self.ids, axes, self.rep)


@dataclass(frozen=True)
class ParamRef:
    """A parameter or buffer flowing through view-like ops; ``dims[i]`` is the parameter dim at tensor axis i."""

    fqn: str
    dims: tuple[int | None, ...]
    shape: tuple[int, ...]


@dataclass
class ChannelState:
    parent: list[int] = field(default_factory=list)
    frozen: set[int] = field(default_factory=set)
    #: (fqn, dim) -> channel id at each position of that dim (-1: not a tracked channel)
    members: dict[MemberKey, np.ndarray] = field(default_factory=dict)
    roles: dict[MemberKey, str] = field(default_factory=dict)
    #: (module path, [heads, head_dim] ids) where a channel axis was split into attention heads
    head_splits: list[tuple[str, np.ndarray]] = field(default_factory=list)
    #: parameters used by ops the graph does not understand: all their members are frozen
    opaque: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def fresh(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.reshape(-1).tolist(), b.reshape(-1).tolist(), strict=True):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)

    def union_all(self, ids: np.ndarray) -> None:
        flat = ids.reshape(-1)
        self.union(flat[:-1], flat[1:])

    def freeze(self, ids: np.ndarray, reason: str) -> None:
        new = set(ids.reshape(-1).tolist()) - self.frozen
        if new:
            self.frozen.update(new)
            self.notes.append(f"{len(new)} channels kept: {reason}")

    def add_member(self, key: MemberKey, size: int, ids: np.ndarray, rep: int, role: str, offset: int = 0) -> bool:
        """Record that positions ``offset..`` of parameter dim ``key`` hold channels ``ids`` (each ``rep`` wide).
        Returns False (and registers nothing) if the sizes do not line up."""
        expanded = np.repeat(ids.reshape(-1), rep)
        if offset + expanded.size > size:
            return False
        arr = self.members.setdefault(key, np.full(size, -1, dtype=np.int64))
        seg = arr[offset : offset + expanded.size]
        known = seg >= 0
        if known.any():  # the same dim reached twice (tied weights): its channels are the same channels
            self.union(seg[known], expanded[known])
        seg[~known] = expanded[~known]
        if key not in self.roles or role == "out":
            self.roles[key] = role
        return True

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)
