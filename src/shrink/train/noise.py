"""Gaussian input noise for training: each input gets ``N(0, (fraction · σ)²)`` noise added element-wise, ``σ`` the
standard deviation of the batch it is in (after mixup, when both are on). Under distillation the teacher labels the
noisy input itself, so the student also learns the teacher's function around the training points (the augmentation
side of function matching, Beyer et al. 2022)."""

from __future__ import annotations

from typing import Any

import torch

from shrink.errors import ConfigError, DataError
from shrink.train.mixup import mix_batch

__all__ = ["add_noise", "loss_inputs"]


def add_noise(inputs: torch.Tensor, fraction: float) -> torch.Tensor:
    """``inputs`` plus Gaussian noise of ``fraction`` times the batch's standard deviation (torch's global
    generator, so a seeded or resumed run draws the same noise); ``fraction == 0`` returns ``inputs`` untouched."""
    if fraction < 0:
        raise ConfigError(f"input_noise: must be >= 0, got {fraction}")
    if fraction == 0:
        return inputs
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        kind = type(inputs).__name__ if not isinstance(inputs, torch.Tensor) else f"{inputs.dtype} tensor"
        raise DataError(
            f"input_noise: needs batches of floating-point input tensors (signals, images), got {kind}; token ids "
            "and dict inputs cannot take noise: set input_noise to 0 for this model"
        )
    sigma = inputs.detach().std() if inputs.numel() > 1 else inputs.new_tensor(0.0)
    return inputs + fraction * sigma * torch.randn_like(inputs)


def loss_inputs(inputs: Any, target: Any, mixup: bool, input_noise: float) -> tuple[Any, Any]:
    """The batch a training loss sees: blended in pairs under ``mixup`` (labels alike), then ``input_noise``. Every
    step that reads a training batch (the loop, a regrowth gradient) goes through here, so all see the same."""
    if mixup:
        inputs, target = mix_batch(inputs, target)
    return add_noise(inputs, input_noise), target
