"""LASSO channel selection with least-squares reconstruction (He et al., 2017, "Channel Pruning for Accelerating
Very Deep Neural Networks").

For a group, the *next* layers (the Linear/Conv layers that read the group's channels) are sampled on data: their
output is written as a sum of per-unit contributions, and the order in which units enter the LASSO regularization
path (LARS) ranks them — units that enter early reconstruct the output best. After the cut, each next layer's
weights on the kept inputs are refit by least squares to reproduce its original output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import lars_path
from torch import nn
from torch.nn import functional as F

from shrink.data import feed_inputs
from shrink.errors import ModelError
from shrink.graph import ChannelGroup

__all__ = ["weight_of", "collect_samples", "lasso_importance", "reconstruct", "consumers"]

MAX_ROWS = 1024
MAX_OUTPUTS = 64


def consumers(group: ChannelGroup, model: nn.Module) -> list[tuple[str, str]]:
    """(module path, weight FQN) of the plain Linear / Conv2d layers reading the group's units."""
    out = []
    for fqn, dim in group.keys("in"):
        path, _, pname = fqn.rpartition(".")
        m = model.get_submodule(path)
        if (
            pname == "weight"
            and dim == 1
            and (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1))
        ):
            out.append((path, fqn))
    return out


def weight_of(m: nn.Module) -> torch.Tensor:
    """The layer's weight tensor (a clear error for a module without one)."""
    w = getattr(m, "weight", None)
    if not isinstance(w, torch.Tensor):
        raise ModelError(f"LASSO channel selection: {type(m).__name__} has no weight tensor to refit")
    return w


def _rows(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as rows of a matrix product: [samples, in_features(*kernel)]."""
    if isinstance(m, nn.Conv2d):
        if isinstance(m.padding, str):
            raise ModelError(f"LASSO channel selection: {m} uses padding={m.padding!r}; give explicit padding")
        cols = F.unfold(x, m.kernel_size, m.dilation, m.padding, m.stride)  # [B, Cin*kh*kw, L]
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


def collect_samples(
    model: nn.Module, paths: list[str], data: Iterable[Any], batches: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Input rows of each layer in ``paths`` on up to ``batches`` batches (at most MAX_ROWS rows each)."""
    rows: dict[str, list[torch.Tensor]] = {p: [] for p in paths}

    def record(path: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        return lambda m, args: rows[path].append(_rows(m, args[0].detach()))

    feed_inputs(model, data, batches, {p: record(p) for p in paths})
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for p, chunks in rows.items():
        x = torch.cat(chunks)
        out[p] = x[torch.randperm(x.shape[0], generator=gen)[:MAX_ROWS]] if x.shape[0] > MAX_ROWS else x
    return out


def _unit_columns(group: ChannelGroup, fqn: str, m: nn.Module) -> np.ndarray:
    """Unit of each input column of the layer's row matrix (kernel positions expanded for convs)."""
    idx = group.index[(fqn, 1)]
    k = int(np.prod(m.kernel_size)) if isinstance(m, nn.Conv2d) else 1
    return np.repeat(idx, k)


def lasso_importance(group: ChannelGroup, model: nn.Module, samples: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """Rank units by when they enter the LASSO path reconstructing the next layers' outputs; None if the group
    has no plain Linear/Conv2d consumer."""
    blocks, target = [], []
    gen = torch.Generator().manual_seed(0)
    for path, fqn in consumers(group, model):
        m = model.get_submodule(path)
        x = samples[path]
        w = weight_of(m).detach().reshape(weight_of(m).shape[0], -1)
        outs = torch.randperm(w.shape[0], generator=gen)[:MAX_OUTPUTS]
        cols = torch.from_numpy(_unit_columns(group, fqn, m))
        contrib = torch.zeros(x.shape[0], len(outs), group.size, dtype=torch.float64)
        for u in range(group.size):
            sel = cols == u
            if sel.any():
                contrib[:, :, u] = (x[:, sel] @ w[outs][:, sel].T).double()
        blocks.append(contrib.reshape(-1, group.size))
        target.append(contrib.sum(2).reshape(-1))
    if not blocks:
        return None
    a, y = torch.cat(blocks).numpy(), torch.cat(target).numpy()
    scale = np.linalg.norm(a, axis=0) + 1e-12
    _, active, _ = lars_path(a / scale, y, method="lasso", max_iter=group.size * 2)
    scores = torch.zeros(group.size, dtype=torch.float64)
    for rank, u in enumerate(active):
        scores[u] = group.size - rank
    return scores


def reconstruct(
    model: nn.Module,
    path: str,
    samples: torch.Tensor,
    original_weight: torch.Tensor,
    kept_inputs: torch.Tensor,
    kept_outputs: torch.Tensor | None = None,
) -> bool:
    """Refit ``path``'s weight on its kept input channels so it reproduces its original (pre-bias) output.
    Returns False (weights left as sliced) with fewer than two samples per kept input column."""
    m = model.get_submodule(path)
    k = int(np.prod(m.kernel_size)) if isinstance(m, nn.Conv2d) else 1
    cols = (kept_inputs[:, None] * k + torch.arange(k)).reshape(-1)
    w = original_weight.detach().reshape(original_weight.shape[0], -1).double()
    if kept_outputs is not None:
        w = w[kept_outputs]
    x = samples.double()
    y = x @ w.T
    xk = x[:, cols]
    if xk.shape[0] < 2 * xk.shape[1]:  # too few samples for a trustworthy fit: keep the sliced weights
        return False
    gram = xk.T @ xk
    ridge = 1e-4 * gram.diagonal().mean().clamp(min=1e-12) * torch.eye(gram.shape[0], dtype=gram.dtype)
    sol = torch.linalg.solve(gram + ridge, xk.T @ y).T  # [out, kept cols]: ridge-regularized least squares
    with torch.no_grad():
        weight = weight_of(m)
        weight.copy_(sol.reshape(weight.shape).to(weight.dtype))
    return True
