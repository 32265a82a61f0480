"""Data-parallel training with torch.distributed (DDP) when launched with ``torchrun``.

``fit`` calls :func:`setup` first: under torchrun (``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` set) it joins the
process group (gloo on CPU, nccl on GPUs), broadcasts rank 0's parameters, gives each rank its slice of every global
batch and averages gradients across ranks after each backward pass (one flattened all-reduce: what DDP's reducer
does), so N processes take the same optimizer steps as one process on the same batches. Only rank 0 writes
checkpoints. BatchNorm statistics stay per rank, as in plain DDP.

Why not the ``DistributedDataParallel`` wrapper itself: its gradient hooks only fire for a forward pass through the
wrapper, and shrink's distillation loss calls the student's submodules directly — under the wrapper those gradients
would silently not be averaged. Averaging after backward works for every loss function.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "setup",
    "is_distributed",
    "rank",
    "world_size",
    "is_main",
    "broadcast_parameters",
    "average_gradients",
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


def broadcast_parameters(model: nn.Module) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, src=0)


def average_gradients(params: list[torch.Tensor]) -> None:
    """Replace each gradient by its mean over ranks (one all-reduce over the flattened gradients)."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


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
