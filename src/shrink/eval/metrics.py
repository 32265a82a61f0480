"""Task metrics: classification accuracy and embedding fidelity (cosine, nearest-neighbour agreement)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from shrink.data import call_model, split_batch
from shrink.errors import DataError

__all__ = ["predict", "accuracy", "embedding_fidelity", "bootstrap_interval"]


def predict(model: Callable[..., Any], data: Iterable[Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenated outputs (and targets, if labelled) of ``model`` over ``data``."""
    outs, targets = [], []
    if isinstance(model, torch.nn.Module):
        model.eval()
    with torch.inference_mode():
        for batch in data:
            inputs, target = split_batch(batch)
            out = call_model(model, inputs) if isinstance(model, torch.nn.Module) else model(inputs)
            outs.append(torch.as_tensor(out).float())
            if target is not None:
                targets.append(target)
    if not outs:
        raise DataError("evaluation data yielded no batch")
    return torch.cat(outs), (torch.cat(targets) if targets else None)


def accuracy(logits: torch.Tensor, targets: torch.Tensor | None) -> float:
    """Top-1 accuracy in percent."""
    if targets is None:
        raise DataError("accuracy needs labelled evaluation data (inputs, target)")
    return float((logits.argmax(-1) == targets).float().mean() * 100)


def embedding_fidelity(reference: torch.Tensor, embeddings: torch.Tensor) -> dict[str, float]:
    """Mean/min cosine of each embedding to its reference and nearest-neighbour agreement (percent): for each item,
    is its nearest other item (by cosine) the same under both embeddings?"""
    if reference.shape != embeddings.shape:
        raise DataError(f"embedding shapes differ: reference {tuple(reference.shape)}, got {tuple(embeddings.shape)}")
    ref = torch.nn.functional.normalize(reference.float(), dim=-1)
    emb = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    cos = (ref * emb).sum(-1)

    def nearest(e: torch.Tensor) -> torch.Tensor:
        sim = e @ e.T
        sim.fill_diagonal_(-float("inf"))
        return sim.argmax(-1)

    same = (nearest(ref) == nearest(emb)).float()
    low, high = bootstrap_interval(same)
    return {
        "cos_mean": float(cos.mean()),
        "cos_min": float(cos.min()),
        "nn_agreement": float(same.mean() * 100),
        "nn_agreement_low": low * 100,
        "nn_agreement_high": high * 100,
    }


def bootstrap_interval(
    values: torch.Tensor, level: float = 0.95, draws: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement ``draws`` times, with a
    fixed seed so the same values always give the same interval)."""
    if values.numel() == 0:
        raise DataError("bootstrap_interval: no values")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, values.numel(), (draws, values.numel()), generator=gen)
    means = values.flatten().float()[idx].mean(dim=1)
    tail = (1 - level) / 2
    return float(torch.quantile(means, tail)), float(torch.quantile(means, 1 - tail))
