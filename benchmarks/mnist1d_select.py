"""Choose the MNIST-1D family settings on the VALIDATION split only: ``python -m benchmarks.mnist1d_select
[--seeds N] [kind ...]`` trains each candidate on seeds 0..N-1 (default 2) and prints its mean validation accuracy;
the winners are typed into ``benchmarks/mnist1d_families.py`` with the printout's date. The test split is never read
here."""

from __future__ import annotations

import argparse
import copy
import statistics
from multiprocessing import get_context
from typing import Any

import torch
from torch import nn

import shrink
from shrink.deepcomp import DeepCompression
from shrink.distillation import KnowledgeDistillation
from shrink.eval.metrics import accuracy, predict
from shrink.pruning import GradualPruning, IterativePruning
from shrink.quant import QAT, Binarize
from shrink.train import FineTune
from shrink.zoo.mnist1d import mnist1d_data
from shrink.zoo.mnist1d_models import Mnist1dCNN, one_thread

#: seeds per candidate unless ``--seeds`` says otherwise
SEEDS = 2
#: what every regrowth candidate shares: 1000 epochs in one cosine schedule from lr 1e-2, one mask update per epoch,
#: trained against the unpruned CNN's soft targets on mixup blends (T=1, no label term)
_REGROW: dict[str, Any] = {
    "epochs": 1000, "frequency": 1, "lr": 1e-2, "mixup": True, "distill_alpha": 1.0, "temperature": 1.0
}  # fmt: skip
#: the row ``regrow_fresh`` chose (RigL from the last mask update, fraction 0.15), which ``regrow_long`` varies
_REGROW_FRESH: dict[str, Any] = {**_REGROW, "pruning_steps": 100, "regrow_fraction": 0.15, "regrow_until": 0.9}
#: the change ``regrow_long`` chose (twice as long), which ``regrow_noise`` keeps
_LONGER: dict[str, Any] = {"epochs": 2000, "pruning_steps": 200}
#: the teacher: ``mnist1d_families.teacher`` (mixup, 500 epochs, cosine); the chosen settings and the printouts of
#: their runs are in ``mnist1d_families``
GRID: dict[str, list[dict[str, Any]]] = {
    "hard": [
        {"epochs": 200, "lr": 1e-2},
        {"epochs": 500, "lr": 1e-2, "mixup": True},
        {"epochs": 300, "lr": 1e-2, "mixup": True},
        {"epochs": 1000, "lr": 1e-2, "mixup": True},
    ],
    "kd": [
        {"epochs": 200, "lr": 1e-2, "temperature": 8.0, "alpha": 0.9},
        {"epochs": 500, "lr": 1e-2, "temperature": 1.0, "alpha": 1.0, "mixup": True},
        {"epochs": 500, "lr": 1e-2, "temperature": 4.0, "alpha": 1.0, "mixup": True},
        {"epochs": 1000, "lr": 1e-2, "temperature": 1.0, "alpha": 1.0, "mixup": True},
        {"epochs": 2000, "lr": 1e-2, "temperature": 1.0, "alpha": 1.0, "mixup": True},
    ],
    # the iterative, QAT, binarization and Deep Compression grids chose their settings on the paper-recipe teacher
    # (2026-12-03); gradual pruning and channels were chosen again on the mixup teacher (2026-12-04)
    "iterative": [
        {"cycles": c, "epochs_per_cycle": e, "lr": lr, "scope": s}
        for c, e, lr, s in (
            (3, 8, 1e-2, "global"),
            (10, 20, 1e-2, "global"),
            (10, 20, 3e-3, "global"),
            (10, 20, 1e-2, "layer"),
        )
    ],  # fmt: skip
    "gradual": [  # mask updates every `frequency` epochs; the epochs after the last one recover
        {"epochs": e, "pruning_steps": 20, "frequency": f, "lr": lr, "mixup": m}
        for e, f, lr, m in (
            (200, 5, 1e-2, False),
            (200, 5, 3e-3, False),
            (200, 10, 1e-2, False),
            (300, 10, 1e-2, False),
            (200, 5, 1e-2, True),
            (500, 5, 1e-2, True),
        )
    ],  # fmt: skip
    # gradual pruning with cross-entropy, then distillation from the unpruned CNN at the fixed masks (the channels
    # row's recovery); `kd_epochs` 0 is the gradual row alone
    "gradual_kd": [
        {"epochs": e, "kd_epochs": k, "kd_lr": lr}
        for e, k, lr in (
            (200, 0, 1e-2),
            (200, 500, 1e-2),
            (100, 500, 1e-2),
            (200, 1000, 1e-2),
            (200, 500, 3e-3),
        )
    ],  # fmt: skip
    # gradual pruning trained against the unpruned CNN's soft targets (T=1, no label term) on mixup blends
    "gradual_distill": [
        {
            "epochs": e,
            "pruning_steps": 20,
            "frequency": f,
            "lr": 1e-2,
            "mixup": True,
            "distill_alpha": 1.0,
            "temperature": 1.0,
        }
        for e, f in ((200, 5), (500, 5), (500, 10), (1000, 20))
    ],  # fmt: skip
    # iterative cycles, each a fresh optimizer and cosine schedule, trained against the unpruned CNN's soft targets on
    # mixup blends (T=1, no label term); `final_epochs` recover at 90%
    "iterative_distill": [
        {
            "cycles": c,
            "epochs_per_cycle": e,
            "final_epochs": f,
            "spacing": sp,
            "lr": 1e-2,
            "mixup": True,
            "distill_alpha": 1.0,
            "temperature": 1.0,
        }
        for c, e, f, sp in (
            (10, 50, 50, "geometric"),
            (10, 100, 100, "geometric"),
            (5, 200, 200, "geometric"),
            (20, 50, 50, "geometric"),
            (10, 50, 500, "geometric"),
            (10, 50, 500, "cubic"),
            (10, 50, 1000, "cubic"),
            (5, 100, 500, "cubic"),
            (20, 25, 500, "cubic"),
            (20, 50, 500, "cubic"),
            (10, 20, 500, "cubic"),
        )
    ],  # fmt: skip
    # gradual pruning over the first `pruning_steps` epochs (one mask update each), then RigL regrowth until
    # `regrow_until` of the run; one cosine schedule, trained against the unpruned CNN's soft targets on mixup blends
    "gradual_regrow": [
        {**_REGROW, "pruning_steps": p, "regrow_fraction": r, "regrow_every": e, "regrow_until": u}
        for p, r, e, u in (
            (300, 0.1, 1, 0.75),
            (300, 0.1, 5, 0.75),
            (100, 0.1, 1, 0.75),
            (100, 0.1, 1, 0.9),
            (50, 0.1, 1, 0.75),
            (100, 0.05, 1, 0.75),
        )
    ],  # fmt: skip
    # the chosen `gradual_regrow` row once regrowth reset the optimizer's state for revived weights and took its
    # gradient on a mixup blend (run with --seeds 8): from the last mask update (RigL) or the first (GraNet), and a
    # larger fraction
    "regrow_fresh": [
        {**_REGROW, "pruning_steps": 100, "regrow_fraction": r, "regrow_until": 0.9, "regrow_from": start}
        for start, r in (("last_update", 0.1), ("first_update", 0.1), ("last_update", 0.15))
    ],
    # the chosen `regrow_fresh` row (fraction 0.15), longer, at a lower rate, softer targets, a larger fraction
    "regrow_long": [
        _REGROW_FRESH | change
        for change in (
            {},
            {"temperature": 4.0},
            _LONGER,
            {"regrow_fraction": 0.3},
            {"lr": 3e-3},
            {"epochs": 4000, "pruning_steps": 400},
            _LONGER | {"lr": 3e-3},
        )
    ],
    # the chosen `regrow_long` row (2000 epochs) with Gaussian noise on every blended input, this fraction of the
    # batch's standard deviation (run with --seeds 4; not taken: see mnist1d_families)
    "regrow_noise": [_REGROW_FRESH | _LONGER | {"input_noise": n} for n in (0.0, 0.1, 0.2)],
    # the chosen `regrow_long` row distilled from an ensemble of this many unpruned CNNs (the pruned CNN's own and
    # the zoo's CNNs of seeds 10, 11, ...; 1: the unpruned CNN alone, the run of `regrow_noise`'s first row)
    "regrow_ensemble": [_REGROW_FRESH | _LONGER | {"ensemble": k} for k in (1, 4, 8)],
    "channels": [
        {"recovery": r, "epochs": e, "importance": i, "lr": 1e-2} | kd
        for r, e, i, kd in (
            ("ce", 200, "l1", {}),
            ("kd", 400, "l1", {"temperature": 8.0, "alpha": 0.9}),
            ("kd", 500, "l1", {"temperature": 1.0, "alpha": 1.0, "mixup": True}),
            ("kd", 500, "l1", {"temperature": 4.0, "alpha": 1.0, "mixup": True}),
            ("kd", 200, "taylor", {"temperature": 8.0, "alpha": 0.9}),
            ("kd", 1000, "l1", {"temperature": 1.0, "alpha": 1.0, "mixup": True}),
            ("kd", 500, "taylor", {"temperature": 1.0, "alpha": 1.0, "mixup": True}),
            ("kd", 500, "l1", {"temperature": 1.0, "alpha": 1.0, "mixup": True, "lr": 3e-3}),
            ("kd", 500, "l2", {"temperature": 1.0, "alpha": 1.0, "mixup": True}),
            ("kd", 500, "lasso", {"temperature": 1.0, "alpha": 1.0, "mixup": True}),
        )
    ],  # fmt: skip
    # for scale, not a choice: dense CNNs about as small as the 90%-sparse one (521 weights), distilled with the KD
    # student's recipe
    "dense": [{"channels": 5}, {"channels": 6}],
    "qat": [{"epochs": e, "lr": lr} for e, lr in ((20, 1e-3), (100, 1e-3), (100, 3e-3))],
    "binarize": [{"epochs": e, "lr": lr} for e, lr in ((30, 2e-3), (200, 2e-3), (200, 1e-2))],
    "deep": [
        {"prune_epochs": 24, "cluster_epochs": 5, "lr": 1e-3},
        {"prune_epochs": 200, "cluster_epochs": 5, "lr": 1e-2},
        {"prune_epochs": 200, "cluster_epochs": 20, "lr": 1e-2, "cluster_lr": 1e-3},
    ],
}


#: the grids whose rows are GradualPruning settings
GRADUAL_GRIDS = (
    "gradual",
    "gradual_distill",
    "gradual_regrow",
    "regrow_fresh",
    "regrow_long",
    "regrow_noise",
    "regrow_ensemble",
)


def _channels(teacher: nn.Module, data: Any, recovery: str, importance: str, **training: Any) -> nn.Module:
    from benchmarks import mnist1d_families as f

    small = f.prune_channels(teacher, data, importance)
    if recovery == "ce":
        return shrink.finetune(small, FineTune(**training), train=data.train, progress=False)
    return shrink.distill(small, teacher, KnowledgeDistillation(**training), train=data.train, progress=False)


def _gradual_kd(teacher: nn.Module, data: Any, epochs: int, kd_epochs: int, kd_lr: float) -> nn.Module:
    from benchmarks import mnist1d_families as f

    cfg = GradualPruning(final_sparsity=0.9, epochs=epochs, pruning_steps=20, frequency=5, lr=1e-2)
    sparse = shrink.prune(copy.deepcopy(teacher), cfg, train=data.train, progress=False)
    if kd_epochs == 0:
        return sparse
    kd = KnowledgeDistillation(epochs=kd_epochs, lr=kd_lr, temperature=f.KD_T, alpha=f.KD_ALPHA, mixup=True)
    return shrink.distill(sparse, teacher, kd, train=data.train, progress=False)


def _build(kind: str, params: dict[str, Any], teacher: nn.Module, data: Any) -> nn.Module:
    from benchmarks import mnist1d_families as f

    train = {"train": data.train, "progress": False}
    if kind in ("hard", "kd"):
        student = Mnist1dCNN(channels=f.STUDENT_CHANNELS)
        if kind == "hard":
            return shrink.finetune(student, FineTune(**params), **train)
        return shrink.distill(student, teacher, KnowledgeDistillation(**params), **train)
    if kind == "dense":
        kd = KnowledgeDistillation(
            epochs=f.KD_EPOCHS, lr=f.STUDENT_LR, temperature=f.KD_T, alpha=f.KD_ALPHA, mixup=True
        )
        return shrink.distill(Mnist1dCNN(channels=params["channels"]), teacher, kd, **train)
    if kind in ("iterative", "iterative_distill"):
        return shrink.prune(teacher, IterativePruning(sparsity=0.9, **params), **train)
    if kind in GRADUAL_GRIDS:
        pruning = {k: v for k, v in params.items() if k != "ensemble"}
        if params.get("ensemble", 1) > 1:
            train["teacher"] = f.ensemble_teacher(teacher, params["ensemble"])
        return shrink.prune(teacher, GradualPruning(final_sparsity=0.9, **pruning), **train)
    if kind == "gradual_kd":
        return _gradual_kd(teacher, data, **params)
    if kind == "channels":
        return _channels(teacher, data, **params)
    if kind == "qat":
        cfg = QAT(weight_bits=4, activation_bits=4, **params)
        return shrink.quantize(teacher, cfg, calibration=data.calibration, **train)
    if kind == "binarize":
        return shrink.quantize(teacher, Binarize(**params), calibration=data.calibration, **train)
    if kind == "deep":
        return shrink.deep_compress(teacher, DeepCompression(sparsity=0.9, **params), **train)
    raise ValueError(f"mnist1d_select: grid {kind!r} has no builder in _build")


def _job(args: tuple[str, int, int]) -> tuple[str, int, int, float]:
    kind, i, seed = args
    torch.set_num_threads(1)
    with one_thread():
        from benchmarks import mnist1d_families as f

        teacher, data = f.teacher(seed), mnist1d_data(seed=seed)
        torch.manual_seed(seed)
        model = _build(kind, GRID[kind][i], teacher, data)
        return kind, i, seed, accuracy(*predict(model, data.val))


def _teacher_val(seed: int) -> float:
    from benchmarks import mnist1d_families as f

    torch.set_num_threads(1)
    return accuracy(*predict(f.teacher(seed), mnist1d_data(seed=seed).val))


def main(kinds: list[str], seeds: int = SEEDS) -> None:
    jobs = [(k, i, s) for k in kinds for i in range(len(GRID[k])) for s in range(seeds)]
    with get_context("spawn").Pool(2) as pool:
        # the teachers first (trained once, cached for the jobs)
        for seed, val in enumerate(pool.map(_teacher_val, range(seeds))):
            print(f"teacher seed {seed}: val {val:.2f}", flush=True)
        rows = pool.map(_job, jobs, chunksize=1)
    for kind in kinds:
        for i, params in enumerate(GRID[kind]):
            vals = [v for k, j, _, v in rows if k == kind and j == i]
            each = ", ".join(f"{v:.1f}" for v in vals)
            print(kind, params, f"val {statistics.mean(vals):.2f} (seeds: {each})", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=SEEDS, help="seeds per candidate, 0..N-1 (default %(default)s)")
    parser.add_argument("kinds", nargs="*", metavar="kind", help=f"grids to run (default: all): {', '.join(GRID)}")
    args = parser.parse_args()
    unknown = [k for k in args.kinds if k not in GRID]
    if unknown:
        parser.error(f"unknown kind(s) {unknown}; choose from {list(GRID)}")
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    main(args.kinds or list(GRID), args.seeds)
