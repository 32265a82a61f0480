"""Distilled data for data-free quantization (ZeroQ, Cai et al., CVPR 2020).

Start from Gaussian noise shaped like the model's input and optimize the pixels so that, at every BatchNorm layer,
the batch's per-channel mean and standard deviation match the running statistics the model learned in training:
``Σ_layers ||μ_batch − μ_BN||₂ + ||σ_batch − σ_BN||₂`` (plus, optionally, the same term for the input itself
against a stated input mean / std). No real sample is read.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from shrink.errors import ModelError
from shrink.quant.algorithms.fold import bn_running_stats

__all__ = ["bn_statistics_loss", "distill_inputs"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dims = [d for d in range(x.dim()) if d != 1]
    return x.mean(dim=dims), x.var(dim=dims, unbiased=False).add(1e-8).sqrt()


def bn_statistics_loss(model: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[], None]]:
    """``(loss_fn, remove)``: ``loss_fn(x)`` runs ``model`` on ``x`` and returns the summed BN-statistics
    mismatch; ``remove()`` detaches the hooks. Raises ModelError if the model has no BatchNorm with running stats."""
    layers = [m for m in model.modules() if isinstance(m, _BN) and m.running_mean is not None]
    if not layers:
        raise ModelError(f"ZeroQ: {type(model).__name__} has no BatchNorm layer with running statistics to match")
    terms: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        assert isinstance(module, _BN)  # registered on the BatchNorm layers listed above only
        running_mean, running_var = bn_running_stats(module)
        mean, std = _stats(args[0])
        target_std = (running_var + module.eps).sqrt()
        terms.append(torch.norm(mean - running_mean) + torch.norm(std - target_std))

    handles = [m.register_forward_pre_hook(hook) for m in layers]

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        terms.clear()
        model(x)
        return torch.stack(terms).sum()

    def remove() -> None:
        for h in handles:
            h.remove()

    return loss_fn, remove


def distill_inputs(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    num_samples: int = 128,
    batch_size: int = 32,
    iterations: int = 200,
    lr: float = 0.2,
    input_mean: float | None = None,
    input_std: float | None = None,
    seed: int = 0,
    history: list[float] | None = None,
) -> torch.Tensor:
    """``num_samples`` synthetic inputs of shape ``input_shape`` (without batch dim) matching the BN statistics.

    ``model`` is put in eval mode (running statistics stay untouched) and its weights are not changed. With
    ``input_mean``/``input_std`` the input's own mean and std are matched too. ``history`` receives the mean loss
    of each iteration over the batches (for tests and reports).
    """
    was_training = model.training
    model.eval()
    params = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    loss_fn, remove = bn_statistics_loss(model)
    batches = []
    per_iter = [0.0] * iterations
    try:
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            x = torch.randn((n, *input_shape), generator=gen).requires_grad_(True)
            opt = torch.optim.Adam([x], lr=lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(iterations, 1))
            for it in range(iterations):
                loss = loss_fn(x)
                if input_mean is not None and input_std is not None:
                    mean, std = _stats(x)
                    loss = loss + torch.norm(mean - input_mean) + torch.norm(std - input_std)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                per_iter[it] += float(loss.detach()) * n / num_samples
            batches.append(x.detach())
    finally:
        remove()
        for p, flag in zip(model.parameters(), params, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)
    if history is not None:
        history.extend(per_iter)
    return torch.cat(batches)
