"""Fine-tuning as a recipe stage: plain supervised training of the current model."""

from __future__ import annotations

from typing import Literal

import pydantic
from torch import nn

from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.errors import DataError
from shrink.train.loop import TaskLoss, fit, task_loss

__all__ = ["FineTune", "finetune_handler"]


@register("finetune", family="train")
class FineTune(Config):
    """Supervised fine-tuning of the current model (masks and fake-quant stay active)."""

    epochs: int = pydantic.Field(3, ge=0)
    lr: float = pydantic.Field(1e-3, gt=0)
    weight_decay: float = pydantic.Field(0.0, ge=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    #: blend training samples in pairs, labels alike (mixup; float tensor inputs only)
    mixup: bool = False
    #: Gaussian noise added to each training input: this fraction of its batch's standard deviation (after mixup;
    #: float tensor inputs only; 0: none)
    input_noise: float = pydantic.Field(0.0, ge=0)
    #: the supervised loss: 'cross_entropy' (class labels), 'mse' or 'l1' (values to regress)
    loss: TaskLoss = "cross_entropy"


@implements(FineTune)
def finetune_handler(model: nn.Module, config: FineTune, ctx: Context) -> nn.Module:
    """Fine-tune ``model`` in place on ``ctx.train``."""
    if ctx.train is None:
        raise DataError("finetune: needs training data (train=...)")
    return fit(
        model,
        ctx.train,
        epochs=config.epochs,
        lr=config.lr,
        weight_decay=config.weight_decay,
        optimizer=config.optimizer,
        mixup=config.mixup,
        input_noise=config.input_noise,
        loss_fn=task_loss(config.loss),
        checkpoint_dir=ctx.checkpoint_dir,
        progress=ctx.progress,
        desc="finetune",
    )
