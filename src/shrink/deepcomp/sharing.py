"""Weight sharing (Han et al., 2016, §2): per layer, the non-zero weights are clustered by 1-D k-means into
``2^bits`` shared values, initialised linearly between the smallest and largest weight (the paper's best
initialisation: it keeps the rare large weights representable). During fine-tuning each layer's weight is
``codebook[index]`` on the kept positions, so the gradient of a centroid is the sum of its members' gradients
("trained quantization")."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from shrink.pruning.masks import make_permanent

__all__ = ["kmeans_1d", "SharedWeight", "share_weights"]


def kmeans_1d(values: torch.Tensor, k: int, iters: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """``(centroids, assignment)`` of 1-D Lloyd k-means with linear initialisation on ``[min, max]``.

    In 1-D the nearest centroid is found exactly by bucketising against the midpoints of the sorted centroids.
    Empty clusters keep their centroid.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    x = values.detach().double().reshape(-1)
    if x.numel() == 0:
        raise ValueError("kmeans_1d: no values to cluster")
    centroids = torch.linspace(float(x.min()), float(x.max()), k, dtype=torch.float64)
    assignment = torch.zeros(x.numel(), dtype=torch.long)
    for _ in range(iters):
        assignment = torch.bucketize(x, (centroids[1:] + centroids[:-1]) / 2)
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, assignment, x)
        counts = torch.bincount(assignment, minlength=k)
        updated = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
        if torch.equal(updated, centroids):
            break
        centroids = updated
    assignment = torch.bucketize(x, (centroids[1:] + centroids[:-1]) / 2)
    return centroids.to(values.dtype), assignment


class SharedWeight(nn.Module):
    """Parametrization ``weight = codebook[index]`` where ``keep``, else 0; only ``codebook`` is trained."""

    def __init__(self, codebook: torch.Tensor, index: torch.Tensor, keep: torch.Tensor) -> None:
        super().__init__()
        self.codebook = nn.Parameter(codebook.detach().clone())
        self.register_buffer("index", index.detach().clone())
        self.register_buffer("keep", keep.detach().to(torch.bool).clone())

    index: torch.Tensor
    keep: torch.Tensor

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return torch.where(self.keep, self.codebook[self.index], torch.zeros((), dtype=self.codebook.dtype))


def share_weights(module: nn.Module, bits: int, iters: int = 30) -> SharedWeight:
    """Cluster ``module.weight``'s non-zeros into ``2^bits`` values and attach the sharing parametrization (the
    original weight is frozen; masks are baked in first, zeros stay zero)."""
    if parametrize.is_parametrized(module, "weight"):
        make_permanent(module)
    weight = module.get_parameter("weight").detach()
    keep = weight != 0
    if not keep.any():
        raise ValueError("share_weights: every weight is zero")
    centroids, assignment = kmeans_1d(weight[keep], 2**bits, iters)
    index = torch.zeros(weight.shape, dtype=torch.long)
    index[keep] = assignment
    shared = SharedWeight(centroids, index, keep)
    module.get_parameter("weight").requires_grad_(False)
    parametrize.register_parametrization(module, "weight", shared)
    return shared
