"""Choose the MNIST-1D family settings on the VALIDATION split only: ``python -m benchmarks.mnist1d_select`` trains
each candidate on seeds 0-1 and prints its mean validation accuracy; the winners are typed into
``benchmarks/mnist1d_families.py`` with the printout's date. The test split is never read here."""

from __future__ import annotations

import itertools
import statistics
import sys
from multiprocessing import get_context
from typing import Any

import torch

import shrink
from shrink.distillation import KnowledgeDistillation
from shrink.eval.metrics import accuracy, predict
from shrink.pruning import ChannelPruning, IterativePruning
from shrink.train import FineTune
from shrink.zoo.mnist1d import mnist1d_data
from shrink.zoo.mnist1d_models import Mnist1dCNN, mnist1d_model, one_thread

SEEDS = (0, 1)
GRID: dict[str, list[dict[str, Any]]] = {
    "hard": [{"lr": lr} for lr in (1e-2, 3e-3)],
    "kd": [
        {"lr": lr, "temperature": t, "alpha": a} for lr, (t, a) in itertools.product((1e-2, 3e-3), ((2, 0.5), (4, 0.7)))
    ],
    "unstructured": [{"scope": s, "lr": lr} for s, lr in itertools.product(("global", "layer"), (1e-3, 1e-2))],
    "channels": [{"lr": lr} for lr in (1e-3, 1e-2)],
}


def _run(kind: str, params: dict[str, Any], seed: int) -> float:
    from benchmarks import mnist1d_families as f

    torch.set_num_threads(1)
    with one_thread():
        teacher, data = mnist1d_model("cnn", seed=seed), mnist1d_data(seed=seed)
        torch.manual_seed(seed)
        student = Mnist1dCNN(channels=f.STUDENT_CHANNELS)
        if kind == "hard":
            model = shrink.finetune(
                student, FineTune(epochs=f.STUDENT_EPOCHS, **params), train=data.train, progress=False
            )
        elif kind == "kd":
            cfg = KnowledgeDistillation(epochs=f.STUDENT_EPOCHS, **params)
            model = shrink.distill(student, teacher, cfg, train=data.train, progress=False)
        elif kind == "unstructured":
            cfg = IterativePruning(
                sparsity=0.9, cycles=f.PRUNE_CYCLES, epochs_per_cycle=f.PRUNE_EPOCHS_PER_CYCLE, **params
            )
            model = shrink.prune(teacher, cfg, train=data.train, progress=False)
        else:
            small = shrink.prune(teacher, ChannelPruning(ratio=0.5), example_inputs=data.example_inputs)
            model = shrink.finetune(
                small, FineTune(epochs=f.CHANNEL_FT_EPOCHS, **params), train=data.train, progress=False
            )
        return accuracy(*predict(model, data.val))


def _job(args: tuple[str, int, int]) -> tuple[str, int, int, float]:
    kind, i, seed = args
    return kind, i, seed, _run(kind, GRID[kind][i], seed)


def main(kinds: list[str]) -> None:
    jobs = [(k, i, s) for k in kinds for i in range(len(GRID[k])) for s in SEEDS]
    with get_context("spawn").Pool(2) as pool:
        rows = pool.map(_job, jobs, chunksize=1)
    for kind in kinds:
        for i, params in enumerate(GRID[kind]):
            val = statistics.mean(v for k, j, _, v in rows if k == kind and j == i)
            print(kind, params, f"val {val:.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or list(GRID))
