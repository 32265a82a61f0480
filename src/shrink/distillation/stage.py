"""Distillation configs and their handlers: ``distill`` (Hinton soft targets + hints) and ``embedding_distill``
(cosine/MSE on embeddings, for unlabelled models such as MiniLM). Both train with :func:`shrink.train.fit`
(progress bar, per-epoch checkpoints, resume)."""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from torch import nn

from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.data import first_batch, split_batch
from shrink.distillation.hints import Hint
from shrink.distillation.objective import DistillLoss, DistillTrainee
from shrink.distillation.student import student_from_layers
from shrink.errors import ConfigError, DataError
from shrink.train.loop import fit

__all__ = ["KnowledgeDistillation", "EmbeddingDistillation"]


class _Training(Config):
    epochs: int = pydantic.Field(10, ge=0)
    lr: float = pydantic.Field(1e-3, gt=0)
    weight_decay: float = pydantic.Field(0.0, ge=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    hints: tuple[Hint, ...] = ()
    #: blend training samples in pairs; the teacher labels each blend (function matching; float tensor inputs only)
    mixup: bool = False
    #: Gaussian noise added to each training input: this fraction of its batch's standard deviation (after mixup;
    #: float tensor inputs only; 0: none)
    input_noise: float = pydantic.Field(0.0, ge=0)


@register("distill", family="distill")
class KnowledgeDistillation(_Training):
    """Train the model against the teacher's softened outputs: ``alpha · T² KL + (1 - alpha) · CE`` plus hints.

    In a recipe the teacher is the recipe's original model, so after pruning or quantization this stage recovers
    accuracy by distilling from it. ``student_zoo`` names a zoo architecture to train from scratch instead of the
    incoming model (the incoming model then is only the stage's input, the teacher stays ``ctx.teacher``).
    """

    temperature: float = pydantic.Field(4.0, gt=0)
    alpha: float = pydantic.Field(0.9, ge=0.0, le=1.0)
    student_zoo: str | None = None
    seed: int = 0


@register("embedding_distill", family="distill")
class EmbeddingDistillation(_Training):
    """Match the teacher's output embeddings (cosine or MSE) — no labels needed.

    ``keep_layers`` first makes the student a copy of the incoming model with only these blocks of its layer stack
    (e.g. ``[0, 2, 4]``: a 3-layer MiniLM from the 6-layer one). ``data`` says which split to train on: data
    bundles without a training split (MiniLM's corpus) train on ``calibration``.
    """

    #: distance between student and teacher embeddings: 'cosine' (1 - cosine similarity) or 'mse'
    loss: Literal["cosine", "mse"] = "cosine"
    #: indices of the layer-stack blocks the student keeps (None: train the incoming model as is)
    keep_layers: tuple[int, ...] | None = None
    #: module path of the layer stack (an nn.ModuleList); 'auto': the largest named layer / layers / blocks / h
    layers_path: str = "auto"
    #: split to train on: 'train', or 'calibration' for data bundles without a training split
    data: Literal["train", "calibration"] = "train"
    lr: float = pydantic.Field(5e-5, gt=0)
    epochs: int = pydantic.Field(3, ge=0)


def _teacher(ctx: Context, where: str) -> nn.Module:
    if ctx.teacher is None:
        raise ConfigError(
            f"{where}: needs a teacher (shrink.distill(student, teacher, config); in a recipe the "
            "original model is the teacher)"
        )
    return ctx.teacher


def _train_split(ctx: Context, split: str, where: str) -> Any:
    data = ctx.train if split == "train" else ctx.calibration
    if data is None:
        hint = " (this data has no training split: set data: calibration)" if split == "train" else ""
        raise DataError(f"{where}: needs {split} data{hint}")
    return data


def _run(student: nn.Module, loss: DistillLoss, data: Any, config: _Training, ctx: Context, desc: str) -> nn.Module:
    trainee = DistillTrainee(student, loss)
    try:
        fit(
            trainee,
            data,
            epochs=config.epochs,
            lr=config.lr,
            weight_decay=config.weight_decay,
            optimizer=config.optimizer,
            loss_fn=DistillTrainee.loss_fn,
            mixup=config.mixup,
            input_noise=config.input_noise,
            checkpoint_dir=ctx.checkpoint_dir,
            progress=ctx.progress,
            desc=desc,
        )
    finally:
        loss.close()
    return student.eval()


def _example(ctx: Context, data: Any) -> Any:
    return ctx.example_inputs if ctx.example_inputs is not None else split_batch(first_batch(data))[0]


@implements(KnowledgeDistillation)
def distill_handler(model: nn.Module, config: KnowledgeDistillation, ctx: Context) -> nn.Module:
    """Hinton distillation of ``model`` (or a fresh ``student_zoo`` model) from ``ctx.teacher``."""
    teacher = _teacher(ctx, "distill")
    data = _train_split(ctx, "train", "distill")
    if config.student_zoo is not None:
        import torch

        from shrink.zoo import MODELS

        if config.student_zoo not in MODELS:
            raise ConfigError(
                f"distill.student_zoo: unknown zoo model {config.student_zoo!r} (known: {', '.join(MODELS)})"
            )
        torch.manual_seed(config.seed)
        model = MODELS[config.student_zoo]()
        ctx.notes.append(f"distill: fresh {config.student_zoo} student trained against the teacher")
    loss = DistillLoss(
        teacher,
        temperature=config.temperature,
        alpha=config.alpha,
        hints=config.hints,
        student=model,
        example_inputs=_example(ctx, data),
    )
    return _run(model, loss, data, config, ctx, "distill")


@implements(EmbeddingDistillation)
def embedding_distill_handler(model: nn.Module, config: EmbeddingDistillation, ctx: Context) -> nn.Module:
    """Embedding distillation of ``model`` (optionally cut to ``keep_layers``) from ``ctx.teacher``."""
    teacher = _teacher(ctx, "embedding_distill")
    data = _train_split(ctx, config.data, "embedding_distill")
    if config.keep_layers is not None:
        model = student_from_layers(model, config.keep_layers, config.layers_path)
        ctx.notes.append(f"embedding_distill: student keeps layers {list(config.keep_layers)} of the stack")
    if config.data == "calibration":
        ctx.notes.append("embedding_distill: trained on the calibration batches (no training split)")
    loss = DistillLoss(
        teacher,
        objective="embedding",
        embedding=config.loss,
        hints=config.hints,
        student=model,
        example_inputs=_example(ctx, data),
    )
    return _run(model, loss, data, config, ctx, "embedding distill")
