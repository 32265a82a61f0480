"""One training loop for every stage that trains (fine-tune, QAT, distillation).

Checkpoints are written atomically after each epoch; with a ``checkpoint_dir`` the loop resumes from the last
complete epoch, restoring model, optimizer, scheduler and RNG state, so a killed run finishes with the same weights
as an uninterrupted one.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from shrink.data import aligned_target, call_model, logits_of, split_batch
from shrink.errors import ConfigError, DataError, FileFormatError, ModelError
from shrink.train.distributed import (
    barrier,
    global_batch_norm,
    is_main,
    rank_rng,
    sample_weight,
    setup,
    shard,
    training_step,
)
from shrink.train.mixup import MixedTarget, cross_entropy
from shrink.train.noise import loss_inputs

__all__ = ["fit", "LossFn", "TaskLoss", "task_loss", "check_distillable"]

#: loss(model, inputs, target) -> scalar tensor
LossFn = Callable[[nn.Module, Any, Any], torch.Tensor]


def cross_entropy_loss(model: nn.Module, inputs: Any, target: Any) -> torch.Tensor:
    if target is None:
        raise DataError("fine-tuning with the default cross-entropy loss needs labelled batches (inputs, target)")
    return cross_entropy(logits_of(call_model(model, inputs)), target)


def _regression_target(target: Any, out: torch.Tensor, kind: str) -> torch.Tensor:
    """The float target to compare ``out`` with: a mixup batch's two targets blended by its weights."""
    if target is None:
        raise DataError(f"training with loss={kind!r} needs batches of (inputs, target)")
    if isinstance(target, MixedTarget):
        w = target.weight.reshape(-1, *([1] * (target.first.dim() - 1))).to(out.dtype)
        target = w * target.first.to(out.dtype) + (1 - w) * target.second.to(out.dtype)
    if not isinstance(target, torch.Tensor):
        raise DataError(f"loss={kind!r}: the target must be a tensor, got {type(target).__name__}")
    return aligned_target(target, out, f"loss={kind!r}")


def _regression_loss(kind: str) -> LossFn:
    reduce = torch.nn.functional.mse_loss if kind == "mse" else torch.nn.functional.l1_loss

    def loss(model: nn.Module, inputs: Any, target: Any) -> torch.Tensor:
        out = logits_of(call_model(model, inputs)).float()
        return reduce(out, _regression_target(target, out, kind))

    return loss


#: the supervised losses a training config can name: class labels, or values to regress (mean squared / absolute error)
TaskLoss = Literal["cross_entropy", "mse", "l1"]


def check_distillable(where: str, loss: TaskLoss) -> None:
    """Soft targets from a teacher (a config's ``distill_alpha``) are class probabilities: refused with a
    regression loss."""
    if loss != "cross_entropy":
        raise ConfigError(
            f"{where}: distill_alpha distils class probabilities, which needs loss='cross_entropy' (got "
            f"loss={loss!r}); set distill_alpha to 0 for a regressor"
        )


def task_loss(name: TaskLoss) -> LossFn:
    """``loss(model, inputs, target)`` for a training config's ``loss`` field."""
    if name == "cross_entropy":
        return cross_entropy_loss
    if name in ("mse", "l1"):
        return _regression_loss(name)
    raise ConfigError(f"loss must be one of 'cross_entropy', 'mse', 'l1', got {name!r}")


def _reseed_loader(train: Iterable[Any], seed: int) -> None:
    """Make a shuffling DataLoader's order a function of the epoch, so a resumed run sees the same batches."""
    generator = getattr(train, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    """Every random generator a training step may draw from (dropout, augmentation, shuffling without a generator)."""
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)  # legacy=True gives the (name, keys, pos, has_gauss, gauss) tuple
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _load_checkpoint(path: Path, model: nn.Module) -> dict[str, Any]:
    """Read ``last.pt`` (tensors and plain values only: never unpickles objects) into ``model``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        return state
    except Exception as exc:
        raise FileFormatError(
            f"{path}: cannot resume from this checkpoint ({type(exc).__name__}: {str(exc).split('. ')[0]}); delete it "
            "or run without --resume"
        ) from None


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _optimizer(name: str, params: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if not params:
        raise ModelError(
            "nothing to train: every parameter it would train (the model's, or the params given) has "
            "requires_grad=False (a model frozen for inference?); unfreeze it first, e.g. model.requires_grad_(True)"
        )
    if name == "adam":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")


def _train_epoch(
    step: nn.Module,
    opt: torch.optim.Optimizer,
    train: Iterable[Any],
    augment: Callable[[torch.Tensor], torch.Tensor] | None,
    epoch: int,
    desc: str,
    mixup: bool = False,
    input_noise: float = 0.0,
) -> float:
    """One pass over ``train``; returns the mean step loss. Under DDP each rank trains on its slice of every global
    batch, its loss weighted by its share of the samples, its random draws its own."""
    total, count = 0.0, 0
    for index, batch in enumerate(train):
        inputs, target = split_batch(batch)
        if augment is not None:
            inputs = augment(inputs)  # on the global batch, with the same draws on every rank
        local_inputs, local_target = shard(inputs), shard(target)
        weight = sample_weight(*((target, local_target) if target is not None else (inputs, local_inputs)))
        with rank_rng(epoch, index):
            # each rank blends and noises its own slice, with its own draws
            local_inputs, local_target = loss_inputs(local_inputs, local_target, mixup, input_noise)
            loss = step(local_inputs, local_target, weight)  # loss_fn(model, ...) * weight + regularizer(model)
        if not torch.isfinite(loss):
            raise DataError(f"{desc}: loss became {loss.item()} at epoch {epoch + 1}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()  # under DDP the reducer averages gradients across ranks here
        opt.step()
        total, count = total + float(loss.detach()), count + 1
    if count == 0:
        raise DataError(f"{desc}: training data yielded no batch")
    return total / count


def _resume(
    ckpt: Path | None, model: nn.Module, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler | None
) -> int:
    """Load ``ckpt`` (model, optimizer, schedule and RNG states) when it exists; the epoch to start from."""
    if ckpt is None:
        return 0
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    if not ckpt.exists():
        return 0
    state = _load_checkpoint(ckpt, model)
    opt.load_state_dict(state["optimizer"])
    if sched is not None:
        sched.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return int(state["epoch"])


def _save_epoch(
    ckpt: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler | None,
    epochs_done: int,
) -> None:
    """Write everything :func:`_resume` needs to continue after ``epochs_done`` epochs."""
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epochs_done, "rng": _rng_state()}
    if sched is not None:
        state["scheduler"] = sched.state_dict()
    _save_checkpoint(ckpt, state)


def fit(
    model: nn.Module,
    train: Iterable[Any],
    *,
    epochs: int,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    optimizer: str = "adam",
    schedule: str = "cosine",
    loss_fn: LossFn = cross_entropy_loss,
    mixup: bool = False,
    input_noise: float = 0.0,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    regularizer: Callable[[nn.Module], torch.Tensor] | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
    on_start: Callable[[torch.optim.Optimizer], None] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    desc: str = "fine-tune",
    params: Iterable[nn.Parameter] | None = None,
    seed: int = 0,
) -> nn.Module:
    """Train ``model`` in place for ``epochs`` epochs and return it in eval mode. ``loss_fn(model, inputs, target)``
    defaults to cross-entropy; ``regularizer(model)`` is added to each step's loss (e.g. an L1 penalty);
    ``on_epoch_end(epoch)`` runs after each epoch (e.g. a pruning schedule step); ``on_start(optimizer)`` runs once
    the optimizer is built (and resumed), before the first epoch, for callers that edit its state (e.g. regrowth
    resetting the moments of revived weights). ``mixup=True`` blends each batch's samples in pairs
    (:mod:`shrink.train.mixup`) before the loss sees them: the default loss and distillation losses read the blended
    labels. ``input_noise > 0`` then adds Gaussian noise of that fraction of each batch's standard deviation
    (:mod:`shrink.train.noise`)."""
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    trainable = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    opt = _optimizer(optimizer, trainable, lr, weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1)) if schedule == "cosine" else None

    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir is not None else None
    start = _resume(ckpt, model, opt, sched)
    if on_start is not None:
        on_start(opt)
    setup()  # under torchrun: join the process group; the step below is then DDP-wrapped (rank 0's start broadcast)
    step = training_step(model, loss_fn, regularizer)

    bar = tqdm(
        range(start, epochs), desc=desc, disable=not progress or not is_main(), leave=False, initial=start, total=epochs
    )
    with global_batch_norm(model):  # under DDP: BatchNorm statistics over the global batch
        for epoch in bar:
            _reseed_loader(train, seed + epoch)
            model.train()
            mean_loss = _train_epoch(step, opt, train, augment, epoch, desc, mixup, input_noise)
            if sched is not None:
                sched.step()
            if on_epoch_end is not None:
                on_epoch_end(epoch)
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            if ckpt is not None and is_main():
                _save_epoch(ckpt, model, opt, sched, epoch + 1)
            barrier()
    return model.eval()
