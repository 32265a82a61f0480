"""Layers of other well-kept libraries that shrink recognizes without importing those libraries."""

from __future__ import annotations

from torch import nn

__all__ = ["is_conv1d"]


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is transformers' ``Conv1D`` (GPT-2's projections: a Linear whose weight is stored
    ``[in, out]``), matched by class name and its ``nf`` / ``nx`` attributes."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "nx")
