"""Unstructured pruning with fine-tuning: iterative prune -> fine-tune cycles (Han et al. 2015) and the gradual
polynomial schedule of Zhu & Gupta (2017), optionally followed by drop-and-regrow mask updates at the final sparsity
(RigL, :mod:`shrink.pruning.regrow`), with optional L1/L2 regularization while fine-tuning.

Masks are parametrizations (``weight = original * mask``) during and after training, so pruned weights stay
exactly zero through every optimizer step; ``make_permanent`` bakes them in, ``shrink.save`` stores them sparse.

``distill_alpha > 0`` trains against the soft targets of the unpruned model (Hinton et al. 2015) instead of, or
beside, the labels: the teacher is a frozen copy taken before the first mask (in a recipe, the recipe's original
model). With ``mixup`` the teacher labels each blended sample (function matching, Beyer et al. 2022).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pydantic
import torch
from torch import nn

from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.data import split_batch
from shrink.distillation.objective import DistillLoss
from shrink.errors import DataError
from shrink.pruning.magnitude import Criterion, Scope, prunable_modules, prune_unstructured
from shrink.pruning.masks import apply_mask, get_mask, weight_of
from shrink.pruning.penalty import Regularization, weight_penalty
from shrink.pruning.regrow import dense_gradients, regrow_fraction, regrow_masks
from shrink.pruning.schedule import iterative_sparsities, polynomial_sparsity, polynomial_steps
from shrink.select import Selector
from shrink.train import fit
from shrink.train.loop import TaskLoss, check_distillable, task_loss
from shrink.train.noise import loss_inputs

__all__ = ["IterativePruning", "GradualPruning", "layer_sparsities"]


class _FineTuneFields(Config):
    """Fine-tuning options shared by the pruning configs that train."""

    lr: float = pydantic.Field(1e-3, gt=0)
    weight_decay: float = pydantic.Field(0.0, ge=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    #: blend training samples in pairs, labels alike (mixup; float tensor inputs only)
    mixup: bool = False
    #: Gaussian noise added to each training input: this fraction of its batch's standard deviation (after mixup;
    #: float tensor inputs only; 0: none)
    input_noise: float = pydantic.Field(0.0, ge=0)
    regularization: Regularization = "none"
    reg_strength: float = pydantic.Field(1e-4, ge=0)
    #: the supervised loss: 'cross_entropy' (class labels), 'mse' or 'l1' (values to regress; no distillation)
    loss: TaskLoss = "cross_entropy"
    #: weight of the soft-target loss from the unpruned model, ``alpha · T² KL + (1 - alpha) · CE`` (0: labels only)
    distill_alpha: float = pydantic.Field(0.0, ge=0.0, le=1.0)
    #: softmax temperature of that loss
    temperature: float = pydantic.Field(4.0, gt=0)
    scope: Scope = "global"
    criterion: Criterion = "magnitude"
    selector: Selector = Selector()
    seed: int = 0


@register("iterative_pruning", family="prune")
class IterativePruning(_FineTuneFields):
    """``cycles`` rounds of prune -> fine-tune ``epochs_per_cycle`` epochs, ending at ``sparsity``; the last round
    fine-tunes ``final_epochs`` epochs when set.

    ``spacing="geometric"`` removes the same fraction of the remaining weights each cycle. Every round is a training
    run of its own: a fresh optimizer and a cosine schedule that starts again from ``lr`` (learning-rate rewinding,
    Renda et al. 2020).
    """

    sparsity: float = pydantic.Field(..., ge=0.0, lt=1.0)
    #: prune -> fine-tune rounds; the last one reaches sparsity
    cycles: int = pydantic.Field(3, ge=1)
    #: fine-tuning epochs after each pruning round, with the masks fixed
    epochs_per_cycle: int = pydantic.Field(2, ge=0)
    #: fine-tuning epochs after the last round (None: epochs_per_cycle), the recovery at the final sparsity
    final_epochs: int | None = pydantic.Field(None, ge=0)
    #: per-round targets: 'geometric' prunes the same fraction of remaining weights, 'linear' equal steps, 'cubic'
    #: Zhu & Gupta's polynomial (large steps first, small ones last)
    spacing: Literal["geometric", "linear", "cubic"] = "geometric"


@register("gradual_pruning", family="prune")
class GradualPruning(_FineTuneFields):
    """Zhu & Gupta's gradual pruning inside one fine-tuning run of ``epochs`` epochs.

    The masks are updated at the start of epochs ``start_epoch + k * frequency`` (k = 0..``pruning_steps``) to
    ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3``; the epochs after the last update recover accuracy at the
    final sparsity. Time is counted in epochs (one mask update per ``frequency`` epochs). With ``regrow_fraction``
    the masks keep moving at the final sparsity after the last update, until ``regrow_until`` (RigL).
    """

    #: sparsity set by the last mask update (after start_epoch + pruning_steps * frequency epochs)
    final_sparsity: float = pydantic.Field(..., ge=0.0, lt=1.0)
    #: sparsity set by the first mask update (after start_epoch epochs)
    initial_sparsity: float = pydantic.Field(0.0, ge=0.0, lt=1.0)
    epochs: int = pydantic.Field(10, ge=1)
    #: epochs trained before the first mask update (0: before training starts)
    start_epoch: int = pydantic.Field(0, ge=0)
    #: mask updates after the first one (pruning_steps + 1 in all) on the cubic schedule
    pruning_steps: int = pydantic.Field(5, ge=1)
    #: epochs between two mask updates
    frequency: int = pydantic.Field(1, ge=1)
    #: after the last mask update (or the first: ``regrow_from``), drop this fraction of the kept weights (smallest
    #: magnitude) and revive as many pruned ones (largest loss gradient, starting at zero) every ``regrow_every``
    #: epochs, the fraction decaying on a cosine to 0 at ``regrow_until`` (RigL, Evci et al. 2020); 0: the masks
    #: stay fixed after the last update
    regrow_fraction: float = pydantic.Field(0.0, ge=0.0, le=1.0)
    #: epochs between two regrowth updates
    regrow_every: int = pydantic.Field(1, ge=1)
    #: the fraction of ``epochs`` after which the masks stay fixed (RigL stops at 0.75)
    regrow_until: float = pydantic.Field(0.75, gt=0.0, le=1.0)
    #: 'last_update': regrow only at the final sparsity (RigL); 'first_update': from the first mask update on,
    #: while the sparsity still rises (GraNet, Liu et al. 2021)
    regrow_from: Literal["last_update", "first_update"] = "last_update"

    @pydantic.model_validator(mode="after")
    def _check_schedule(self) -> GradualPruning:
        if self.initial_sparsity > self.final_sparsity:
            raise ValueError(f"initial_sparsity {self.initial_sparsity} > final_sparsity {self.final_sparsity}")
        end = self.last_update
        if end > self.epochs:
            raise ValueError(
                f"the schedule ends at epoch {end} (start_epoch + pruning_steps * frequency) but "
                f"training has only {self.epochs} epochs"
            )
        if self.regrow_fraction > 0 and self.regrow_end <= self.regrow_start:
            raise ValueError(
                f"regrowth would stop at epoch {self.regrow_end} (regrow_until * epochs), before its first update "
                f"at epoch {self.regrow_start} (regrow_every after the {self.regrow_from.replace('_', ' ')}): raise "
                "regrow_until or epochs, or set regrow_fraction to 0"
            )
        return self

    @property
    def last_update(self) -> int:
        """The epoch of the last mask update, the one that reaches ``final_sparsity``."""
        return self.start_epoch + self.pruning_steps * self.frequency

    @property
    def regrow_start(self) -> int:
        """The epoch of the first regrowth update, the one at the full ``regrow_fraction``."""
        after = self.start_epoch if self.regrow_from == "first_update" else self.last_update
        return after + self.regrow_every

    @property
    def regrow_end(self) -> int:
        """The epoch after which the masks stay fixed."""
        return int(self.regrow_until * self.epochs)


def layer_sparsities(modules: dict[str, nn.Module]) -> dict[str, float]:
    """Fraction of zero effective weights in each module."""
    return {name: float((weight_of(m) == 0).float().mean()) for name, m in modules.items()}


def _describe(modules: dict[str, nn.Module]) -> str:
    per_layer = layer_sparsities(modules)
    total = sum(weight_of(m).numel() for m in modules.values())
    zeros = sum(per_layer[n] * weight_of(m).numel() for n, m in modules.items())
    layers = ", ".join(f"{n} {100 * s:.0f}%" for n, s in per_layer.items())
    return f"sparsity {100 * zeros / total:.1f}% over {len(modules)} layers ({layers})"


def _teacher(model: nn.Module, cfg: _FineTuneFields, ctx: Context) -> DistillLoss | None:
    """The soft-target loss from the unpruned model (``ctx.teacher``, else a frozen copy of ``model`` as it is now,
    before any mask), or None when ``distill_alpha`` is 0."""
    if cfg.distill_alpha == 0.0:
        return None
    check_distillable(cfg.type_name, cfg.loss)
    teacher = ctx.teacher if ctx.teacher is not None else copy.deepcopy(model)
    source = "the recipe's original model" if ctx.teacher is not None else "a frozen copy of the incoming model"
    ctx.notes.append(
        f"{cfg.type_name}: trained against the soft targets of {source} "
        f"(distill_alpha {cfg.distill_alpha:g}, temperature {cfg.temperature:g})"
    )
    return DistillLoss(teacher, temperature=cfg.temperature, alpha=cfg.distill_alpha)


def _train(
    model: nn.Module,
    cfg: _FineTuneFields,
    ctx: Context,
    modules: dict[str, nn.Module],
    *,
    epochs: int,
    desc: str,
    sub: str,
    teacher: DistillLoss | None,
    on_epoch_end: Callable[[int], None] | None = None,
    on_start: Callable[[torch.optim.Optimizer], None] | None = None,
) -> None:
    if epochs == 0:
        return
    if ctx.train is None:
        raise DataError(f"{cfg.type_name}: fine-tuning needs training data (train=...)")
    fit(
        model,
        ctx.train,
        epochs=epochs,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        optimizer=cfg.optimizer,
        loss_fn=teacher if teacher is not None else task_loss(cfg.loss),
        mixup=cfg.mixup,
        input_noise=cfg.input_noise,
        regularizer=weight_penalty(modules, cfg.regularization, cfg.reg_strength),
        on_epoch_end=on_epoch_end,
        on_start=on_start,
        checkpoint_dir=Path(ctx.checkpoint_dir) / sub if ctx.checkpoint_dir is not None else None,
        progress=ctx.progress,
        desc=desc,
        seed=cfg.seed,
    )


@implements(IterativePruning)
def iterative_prune(model: nn.Module, config: IterativePruning, ctx: Context) -> nn.Module:
    """Prune to each cycle's sparsity, then fine-tune with the masks fixed; a killed run resumes per cycle."""
    modules = prunable_modules(model, config.selector, "iterative_pruning.selector", ctx)
    teacher = _teacher(model, config, ctx)
    targets = iterative_sparsities(config.sparsity, config.cycles, config.spacing)
    last_epochs = config.final_epochs if config.final_epochs is not None else config.epochs_per_cycle
    for cycle, target in enumerate(targets, start=1):
        prune_unstructured(modules, target, config.scope, config.criterion, config.seed + cycle)
        _train(
            model,
            config,
            ctx,
            modules,
            epochs=last_epochs if cycle == config.cycles else config.epochs_per_cycle,
            teacher=teacher,
            sub=f"cycle-{cycle:02d}",
            desc=f"iterative pruning {cycle}/{config.cycles} ({100 * target:.0f}%)",
        )
    ctx.notes.append(
        f"iterative_pruning: {config.cycles} cycles x {config.epochs_per_cycle} epochs, the last {last_epochs} "
        f"({', '.join(f'{100 * t:.1f}%' for t in targets)}); {_describe(modules)}"
    )
    return model.eval()


def _regrow(
    model: nn.Module,
    modules: dict[str, nn.Module],
    config: GradualPruning,
    ctx: Context,
    teacher: DistillLoss | None,
    fraction: float,
    optimizer: torch.optim.Optimizer,
) -> int:
    """One regrowth update, its gradient from the loss training follows (on a batch blended and noised as training's
    are); returns the number of weights moved."""
    assert ctx.train is not None  # _train checked it before the first epoch
    loss = teacher if teacher is not None else task_loss(config.loss)
    batch = loss_inputs(*split_batch(next(iter(ctx.train))), config.mixup, config.input_noise)
    grads = dense_gradients(model, modules, loss, batch)
    return regrow_masks(modules, grads, fraction, config.scope, optimizer)


@implements(GradualPruning)
def gradual_prune(model: nn.Module, config: GradualPruning, ctx: Context) -> nn.Module:
    """Fine-tune for ``epochs`` epochs while the masks follow the polynomial schedule (updated between epochs)."""
    modules = prunable_modules(model, config.selector, "gradual_pruning.selector", ctx)
    updates = polynomial_steps(start=config.start_epoch, steps=config.pruning_steps, frequency=config.frequency)

    def target(t: int) -> float:
        return polynomial_sparsity(
            t,
            initial=config.initial_sparsity,
            final=config.final_sparsity,
            start=config.start_epoch,
            steps=config.pruning_steps,
            frequency=config.frequency,
        )

    teacher = _teacher(model, config, ctx)
    swaps: list[int] = []
    optimizer: list[torch.optim.Optimizer] = []  # fit's (on_start, before the first epoch): regrowth resets its state

    def step(t: int) -> None:
        if t in updates:
            prune_unstructured(modules, target(t), config.scope, config.criterion, config.seed + t)
        start = config.regrow_start
        fraction = regrow_fraction(t, start=start, end=config.regrow_end, fraction=config.regrow_fraction)
        if fraction > 0 and (t - start) % config.regrow_every == 0:
            swaps.append(_regrow(model, modules, config, ctx, teacher, fraction, optimizer[0]))

    for m in modules.values():  # masks exist from the start so that a resumed run can load them
        if get_mask(m) is None:
            apply_mask(m, torch.ones_like(weight_of(m), dtype=torch.bool))
    step(0)
    _train(
        model,
        config,
        ctx,
        modules,
        epochs=config.epochs,
        teacher=teacher,
        sub="gradual",
        desc="gradual pruning",
        on_epoch_end=lambda epoch: step(epoch + 1),
        on_start=optimizer.append,
    )
    if config.epochs == updates[-1]:
        ctx.notes.append("gradual_pruning: the last mask update came after the last epoch (no recovery epochs)")
    if swaps:
        ctx.notes.append(
            f"gradual_pruning: {len(swaps)} regrowth updates up to epoch {config.regrow_end} moved {sum(swaps)} "
            f"weights (first {swaps[0]}, last {swaps[-1]})"
        )
    ctx.notes.append(
        f"gradual_pruning: {config.pruning_steps + 1} mask updates at epochs {updates} "
        f"({', '.join(f'{100 * target(t):.1f}%' for t in updates)}); {_describe(modules)}"
    )
    return model.eval()
