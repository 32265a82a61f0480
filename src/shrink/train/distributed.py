"""Data-parallel training with torch.distributed DDP when launched with ``torchrun``.

``fit`` calls :func:`setup` first: under torchrun (``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` set) it joins the
process group (gloo on CPU, nccl on GPUs). :func:`training_step` then wraps one training step — the loss function
applied to the model, plus the regularizer — in ``torch.nn.parallel.DistributedDataParallel``: the wrapper
broadcasts rank 0's parameters and buffers when it is built, and its reducer averages gradients across ranks during
the backward pass. Each rank computes the loss on its slice of every global batch (:func:`shard`), so N processes
take the same optimizer steps as one process on the same batches (buffers such as BatchNorm statistics are
broadcast from rank 0 before each forward, DDP's default). Only rank 0 writes checkpoints, and it saves the
unwrapped model's state (no ``module.`` prefixes), so a checkpoint resumes with or without torchrun.

Why the wrapper holds the whole step rather than the model alone: DDP averages only the gradients of parameters
reached from a forward pass *through the wrapper*, and shrink's loss functions may call a model's submodules
directly (distillation reads the student inside a trainee module). Running the loss inside the wrapped forward
makes every such loss a DDP forward. ``find_unused_parameters=True`` because a loss may leave some trainable
parameters out of a step (a frozen teacher, a subset passed as ``params``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "setup",
    "is_distributed",
    "rank",
    "world_size",
    "is_main",
    "TrainingStep",
    "training_step",
    "shard",
    "barrier",
]


def setup() -> bool:
    """Join the process group described by torchrun's environment (if any); True when running distributed."""
    if not dist.is_available():
        return False
    if not dist.is_initialized() and {"RANK", "WORLD_SIZE", "MASTER_ADDR"} <= set(os.environ):
        if int(os.environ["WORLD_SIZE"]) < 2:
            return False
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return is_distributed()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0 (and when not distributed): the process that writes files."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


class TrainingStep(nn.Module):
    """``forward(inputs, target)`` = ``loss_fn(model, inputs, target)`` (+ ``regularizer(model)``): one training
    step's loss as a module, so DDP can wrap all of it. Holds ``model`` as its only submodule."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[nn.Module, Any, Any], torch.Tensor],
        regularizer: Callable[[nn.Module], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss_fn, self.regularizer = loss_fn, regularizer

    def forward(self, inputs: Any, target: Any) -> torch.Tensor:
        loss = self.loss_fn(self.model, inputs, target)
        if self.regularizer is not None:
            loss = loss + self.regularizer(self.model)
        return loss


def training_step(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any, Any], torch.Tensor],
    regularizer: Callable[[nn.Module], torch.Tensor] | None = None,
) -> nn.Module:
    """The module ``fit`` calls for each batch's loss: :class:`TrainingStep` inside ``DistributedDataParallel``
    when running distributed (rank 0's weights broadcast now; gradients averaged in backward), else bare."""
    step = TrainingStep(model, loss_fn, regularizer)
    if not is_distributed():
        return step
    devices = {p.device for p in model.parameters()}
    device_ids = None
    if len(devices) == 1 and next(iter(devices)).type == "cuda":
        device_ids = [next(iter(devices)).index]
    return DistributedDataParallel(step, device_ids=device_ids, find_unused_parameters=True)


def shard(x: Any) -> Any:
    """This rank's contiguous slice of a global batch (tensor, dict or tuple of tensors); unchanged when not
    distributed. Slices are as equal as possible (``torch.tensor_split``)."""
    if not is_distributed() or x is None:
        return x
    if isinstance(x, torch.Tensor):
        return torch.tensor_split(x, world_size())[rank()]
    if isinstance(x, dict):
        return {k: shard(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(shard(v) for v in x)
    return x
