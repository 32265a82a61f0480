"""Data-parallel training with torch.distributed DDP when launched with ``torchrun``.

``fit`` calls :func:`setup` first: under torchrun (``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` set) it joins the
process group (gloo on CPU, nccl on GPUs). :func:`training_step` then wraps one training step — the loss function
applied to the model, plus the regularizer — in ``torch.nn.parallel.DistributedDataParallel``: the wrapper
broadcasts rank 0's parameters and buffers when it is built, and its reducer averages gradients across ranks during
the backward pass. Each rank computes the loss on its slice of every global batch (:func:`shard`). N processes take
the same optimizer steps as one process on the same global batches, to float rounding, because:

* **uneven slices are weighted by sample count**: a rank's loss (a mean over its samples) is multiplied by
  ``world_size * n_rank / n_global`` (:func:`sample_weight`), so the average DDP takes is the global mean, not a mean
  of per-rank means (a 15-sample batch splits 8 / 7);
* **BatchNorm normalises with global batch statistics**: while training distributed, every BatchNorm layer's forward
  is replaced (:func:`global_batch_norm`) by one that all-reduces per-channel sums and counts, differentiably, so
  each rank's half batch is normalised with the whole batch's mean and variance and the running statistics are
  updated identically on every rank. This is ``torch.nn.SyncBatchNorm``'s math; SyncBatchNorm itself refuses CPU
  tensors, and swapping modules would change the user's model, so the forward is patched on the module instance
  for the duration of ``fit`` and removed afterwards;
* **random draws inside the step differ per rank** (:func:`rank_rng`): the forward runs with torch's generator
  seeded from (initial seed, epoch, step, rank) and the global stream restored afterwards, so dropout masks differ
  between ranks (as they would between the samples of one process) while augmentation of the global batch, drawn
  outside the step, stays identical on every rank. With dropout, N processes therefore match one process only in
  distribution, not bit for bit.

QAT with ``method="lsq"`` scales each step size's gradient by ``1/sqrt(elements · Qp)`` (Esser et al.); an
activation quantizer sees only its rank's slice of the batch, so it counts the elements of the whole global batch
(one all-reduce of a scalar per training forward) and learns the steps one process would.

Only rank 0 writes checkpoints, and it saves the unwrapped model's state (no ``module.`` prefixes), so a checkpoint
resumes with or without torchrun.

Why the wrapper holds the whole step rather than the model alone: DDP averages only the gradients of parameters
reached from a forward pass *through the wrapper*, and shrink's loss functions may call a model's submodules
directly (distillation reads the student inside a trainee module). Running the loss inside the wrapped forward
makes every such loss a DDP forward. ``find_unused_parameters=True`` because a loss may leave some trainable
parameters out of a step (a frozen teacher, a subset passed as ``params``). A ``loss_fn`` must be a mean over the
batch's samples (cross-entropy and shrink's distillation losses are) for the sample weighting to be exact.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
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
    "sample_weight",
    "global_batch_norm",
    "rank_rng",
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
        atexit.register(_destroy)  # a group left alive at exit can abort the process there (gloo's threads)
    return is_distributed()


#: how long a rank exiting waits for the others before it tears its group down (not the group's 30-minute default)
EXIT_BARRIER_WAIT = timedelta(seconds=60)
_EXIT_KEY = "shrink/exit"
#: the name torch's ProcessGroupGloo gives its worker threads (what /proc/self/task/*/comm shows)
_GLOO_WORKER = "pt_gloo_runloop"


def _destroy() -> None:
    """Tear down the process group :func:`setup` made, at interpreter exit (if nothing did it before).

    Why this takes care: gloo runs each collective on a worker thread, and that thread frees the collective's work
    object (and, through it, earlier ones it held weakly) after it has woken the caller. A collective started inside
    a backward pass holds the autograd engine's Python context, so freeing it takes the GIL; a worker that asks for
    the GIL while the interpreter finalizes is ended by Python mid-destructor and the process aborts with "terminate
    called without an active exception". ``DistributedDataParallel`` keeps references to the group, so
    ``destroy_process_group`` does not stop those threads either. So at exit the ranks meet on the group's
    key-value store (a collective here would be one more work for a worker to free), then this waits, with the GIL
    released, until gloo's worker threads are all asleep, and only then tears the group down."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    _meet_at_exit()
    _wait_for_idle_threads(_GLOO_WORKER)
    dist.destroy_process_group()


def _meet_at_exit() -> None:
    """Wait until every rank is exiting, meeting on the group's key-value store rather than with a collective, for
    at most :data:`EXIT_BARRIER_WAIT`."""
    default_store = getattr(dist.distributed_c10d, "_get_default_store", None)  # private API: absent, do not wait
    if default_store is None:
        return
    with contextlib.suppress(RuntimeError):  # a rank gone or late past the wait (DistStoreError): tear down anyway
        store = default_store()
        if store.add(_EXIT_KEY, 1) == dist.get_world_size():
            store.set(f"{_EXIT_KEY}/all", "1")
        store.wait([f"{_EXIT_KEY}/all"], EXIT_BARRIER_WAIT)


def _wait_for_idle_threads(name: str, timeout: float = 2.0, settle: int = 3, poll: float = 0.002) -> bool:
    """Sleep (which releases the GIL) until every thread of this process named ``name`` has been asleep ("S") in
    ``settle`` polls in a row, for at most ``timeout`` seconds; True once they were. Linux (``/proc``) only: elsewhere
    it returns False at once."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return False
    deadline, quiet = time.monotonic() + timeout, 0
    while quiet < settle and time.monotonic() < deadline:
        time.sleep(poll)
        quiet = quiet + 1 if all(state == "S" for state in _thread_states(tasks, name)) else 0
    return quiet >= settle


def _thread_states(tasks: Path, name: str) -> list[str]:
    states = []
    for task in tasks.iterdir():
        with contextlib.suppress(OSError):  # a thread that ended between the listing and the read
            if (task / "comm").read_text().strip() == name:
                # /proc/<pid>/task/<tid>/stat: "tid (comm) state ...": the state follows the last ")"
                states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
    return states


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

    def forward(self, inputs: Any, target: Any, weight: float = 1.0) -> torch.Tensor:
        loss = self.loss_fn(self.model, inputs, target)
        if weight == 0.0:  # an empty slice (a global batch smaller than the world): mean of nothing is NaN
            loss = torch.nan_to_num(loss, nan=0.0) * 0.0
        elif weight != 1.0:
            loss = loss * weight
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


def batch_len(x: Any) -> int | None:
    """Number of samples in a batch: the first dimension of its first tensor (None when it holds no tensor)."""
    if isinstance(x, torch.Tensor):
        return int(x.shape[0]) if x.dim() > 0 else None
    values = x.values() if isinstance(x, dict) else x if isinstance(x, (tuple, list)) else ()
    for v in values:
        n = batch_len(v)
        if n is not None:
            return n
    return None


def sample_weight(global_batch: Any, local_batch: Any) -> float:
    """``world_size * n_local / n_global``: the factor that turns DDP's mean of per-rank mean losses into the mean
    over the global batch's samples (1.0 when not distributed or when the batch holds no tensor)."""
    if not is_distributed():
        return 1.0
    n_global, n_local = batch_len(global_batch), batch_len(local_batch)
    if not n_global or n_local is None:
        return 1.0
    return world_size() * n_local / n_global


def _global_bn_forward(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm in training mode with statistics over the whole global batch (all ranks' slices)."""
    from torch.distributed.nn.functional import all_reduce

    if not (bn.training or bn.running_mean is None) or not is_distributed():  # running statistics: nothing to sync
        return type(bn).forward(bn, x)
    bn._check_input_dim(x)
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    count = torch.tensor([x.numel() / max(x.shape[1], 1)], dtype=x.dtype, device=x.device)
    totals = all_reduce(torch.cat([x.sum(dims), count]))  # differentiable: backward all-reduces the gradients
    n = totals[-1].detach()
    mean = totals[:-1] / n
    centred = x - mean.reshape(shape)
    var = all_reduce((centred * centred).sum(dims)) / n  # two passes, as accurate as one process's batch_norm
    y = centred * torch.rsqrt(var + bn.eps).reshape(shape)
    if bn.affine:
        y = y * bn.weight.reshape(shape) + bn.bias.reshape(shape)
    if bn.training and bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
        with torch.no_grad():
            assert bn.num_batches_tracked is not None
            bn.num_batches_tracked.add_(1)
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            bn.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1).clamp(min=1)), alpha=m)
    return y


@contextlib.contextmanager
def global_batch_norm(model: nn.Module) -> Iterator[None]:
    """While distributed, every BatchNorm layer of ``model`` normalises with global batch statistics (see the
    module docstring); the patch lives on the module instances only for the duration of the block."""
    patched = []
    if is_distributed():
        for module in model.modules():
            if not isinstance(module, nn.modules.batchnorm._BatchNorm) or isinstance(module, nn.SyncBatchNorm):
                continue
            if "forward" not in vars(module):
                module.forward = _bound_bn(module)  # type: ignore[method-assign, assignment]
                patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


def _bound_bn(bn: nn.modules.batchnorm._BatchNorm) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        return _global_bn_forward(bn, x)

    return forward


@contextlib.contextmanager
def rank_rng(epoch: int, step: int) -> Iterator[None]:
    """Under DDP: run the block with torch's generator seeded from (initial seed, epoch, step, rank), restoring the
    global stream after it, so each rank draws its own dropout masks. A no-op when not distributed."""
    if not is_distributed():
        yield
        return
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    seed = hash((torch.initial_seed(), epoch, step, rank())) & (2**63 - 1)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
