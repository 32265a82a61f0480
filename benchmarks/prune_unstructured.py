"""Unstructured and N:M pruning of the digits CNN: accuracy after fine-tuning, bytes on disk, time to compress and
peak memory — shrink side by side with ``torch.nn.utils.prune`` at the same fine-tuning budget, in one run."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import shrink
from benchmarks.baselines import ms_cell, time_together
from benchmarks.common import Section, Table, run_measured, save_png
from benchmarks.targets import unstructured_targets
from shrink.eval.metrics import accuracy, predict
from shrink.export.artifact import artifact_bytes
from shrink.pruning import IterativePruning, MagnitudePruning, NMSparsity, make_permanent, sparsity
from shrink.pruning.nm import NM_CPU_NOTE
from shrink.train import FineTune, fit
from shrink.zoo import digits_data, digits_teacher

TITLE = "Unstructured and N:M pruning (digits CNN)"
LR = 1e-3


def _acc(model: nn.Module, data) -> float:
    return accuracy(*predict(model, data.test))


def _torch_file_bytes(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def _weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _torch_prune(teacher: nn.Module, data, amount: float, epochs: int) -> nn.Module:
    """The documented torch path: global L1 unstructured, fine-tune with its masks, ``prune.remove``."""
    model = copy.deepcopy(teacher)
    torch_prune.global_unstructured(_weights(model), pruning_method=torch_prune.L1Unstructured, amount=amount)
    fit(model, data.train, epochs=epochs, lr=LR, progress=False, desc="torch prune fine-tune")
    for module, name in _weights(model):
        torch_prune.remove(module, name)
    return model.eval()


def _shrink_oneshot(teacher: nn.Module, data, amount: float, epochs: int, criterion: str = "magnitude") -> nn.Module:
    pruned = shrink.prune(teacher, MagnitudePruning(sparsity=amount, scope="global", criterion=criterion))
    return shrink.finetune(pruned, FineTune(epochs=epochs, lr=LR), train=data.train, progress=False)


def _shrink_iterative(teacher: nn.Module, data, amount: float, cycles: int, epochs_per_cycle: int) -> nn.Module:
    cfg = IterativePruning(sparsity=amount, cycles=cycles, epochs_per_cycle=epochs_per_cycle, lr=LR)
    return shrink.prune(teacher, cfg, train=data.train, progress=False)


def _measure(build: Callable[[], nn.Module]) -> tuple[nn.Module, float, float]:
    torch.manual_seed(0)
    return run_measured(build)


def _plot(points: dict[str, list[tuple[float, float]]], dense: tuple[float, float]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, pts in points.items():
        ax.plot([p[0] / 1024 for p in pts], [p[1] for p in pts], "o-", label=label)
    ax.plot([dense[0] / 1024], [dense[1]], "k*", markersize=10, label="dense fp32")
    ax.set_xscale("log")
    ax.set_xlabel("file on disk (KiB, log)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("digits CNN: unstructured pruning at 50/80/90%")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return save_png(buf.getvalue(), "prune_unstructured.png")


def run(quick: bool) -> Section:
    teacher, data = digits_teacher(progress=False), digits_data()
    base_acc, dense_bytes, torch_dense = _acc(teacher, data), artifact_bytes(teacher), _torch_file_bytes(teacher)
    budget = 1 if quick else 3
    cycles, per_cycle = (3, 2) if quick else (3, 3)
    section = Section(
        TITLE,
        intro=(
            f"Digits CNN teacher ({sum(p.numel() for p in teacher.parameters()):,} parameters), test accuracy "
            f"{base_acc:.2f}% on 360 held-out images (one image = 0.28 points). Files are real: shrink's via "
            "`shrink.save` (sparse tensors as bitmask + values), torch's via `torch.save(state_dict)` after "
            f"`prune.remove`. Fine-tuning: Adam, lr {LR}, cosine schedule, same data for every method. "
            + NM_CPU_NOTE
            + "."
        ),
    )

    # (a) the issue-3 target: 90% global sparsity by iterative pruning + fine-tuning
    it90, secs, peak = _measure(lambda: _shrink_iterative(teacher, data, 0.9, cycles, per_cycle))
    acc90, bytes90 = _acc(it90, data), artifact_bytes(it90)
    real_sparsity = sparsity(make_permanent(copy.deepcopy(it90)))
    t_a = Table(
        "90% global magnitude sparsity, iterative pruning + fine-tuning",
        [
            "model",
            "weight sparsity",
            "test acc (%)",
            "drop (points)",
            "file (bytes)",
            "file / dense",
            "compress time (s)",
            "peak mem (MiB)",
        ],
    )
    t_a.add("dense fp32", "0%", base_acc, 0.0, dense_bytes, "100%", "-", "-")
    t_a.add(
        f"shrink iterative_pruning ({cycles} cycles x {per_cycle} epochs)",
        f"{100 * real_sparsity:.1f}%",
        acc90,
        base_acc - acc90,
        bytes90,
        f"{100 * bytes90 / dense_bytes:.1f}%",
        secs,
        peak,
    )
    section.tables.append(t_a)
    section.targets += unstructured_targets(base_acc, acc90, bytes90, dense_bytes)

    # (b) issue 6: shrink vs torch.nn.utils.prune at 50/80/90% with the same fine-tuning budget
    methods: dict[str, Callable[[float], nn.Module]] = {
        f"shrink magnitude one-shot + {budget} ep": lambda s: _shrink_oneshot(teacher, data, s, budget),
        f"torch.nn.utils.prune global L1 + {budget} ep": lambda s: _torch_prune(teacher, data, s, budget),
    }
    if not quick:
        methods[f"shrink iterative {budget} x 1 ep"] = lambda s: _shrink_iterative(teacher, data, s, budget, 1)
        methods[f"shrink random one-shot + {budget} ep (baseline)"] = lambda s: _shrink_oneshot(
            teacher, data, s, budget, criterion="random"
        )
    t_b = Table(
        f"Unstructured pruning at 50/80/90%, same fine-tuning budget ({budget} epochs)",
        [
            "sparsity",
            "method",
            "test acc (%)",
            "drop (points)",
            "file (bytes)",
            "file / dense fp32",
            "compress time (s)",
            "peak mem (MiB)",
        ],
        note=f"Dense fp32 files: shrink.save {dense_bytes:,} bytes, torch.save {torch_dense:,} bytes; each "
        "method's ratio is against its own tool's dense file.",
    )
    points: dict[str, list[tuple[float, float]]] = {}
    for amount in (0.5, 0.8, 0.9):
        for label, build in methods.items():
            model, secs, peak = _measure(lambda b=build, s=amount: b(s))
            acc = _acc(model, data)
            is_torch = label.startswith("torch")
            size = _torch_file_bytes(model) if is_torch else artifact_bytes(model)
            ref = torch_dense if is_torch else dense_bytes
            t_b.add(f"{100 * amount:.0f}%", label, acc, base_acc - acc, size, f"{100 * size / ref:.1f}%", secs, peak)
            points.setdefault(label, []).append((size, acc))
    section.tables.append(t_b)
    section.images.append(_plot(points, (dense_bytes, base_acc)))

    # (c) N:M semi-structured sparsity
    t_c = Table(
        f"N:M semi-structured sparsity, {budget} fine-tuning epochs with the masks fixed, packed storage",
        [
            "pattern",
            "layers packed",
            "test acc (%)",
            "drop (points)",
            "file (bytes)",
            "file / dense",
            "compress time (s)",
            "peak mem (MiB)",
            "CPU latency b32 (ms)",
        ],
        note="Packed layers store n/m of the fp32 values plus an m-bit field per group; the first conv (1 "
        "input channel) has no whole group and stays dense. " + NM_CPU_NOTE + ". On CPU the packed "
        "layer rebuilds the dense weight each call, so its latency is the dense latency or worse.",
    )
    x32 = next(iter(data.test))[0][:32]
    rows: list[list] = [["dense fp32", "-", base_acc, 0.0, dense_bytes, "100%", "-", "-"]]
    models: dict[str, nn.Module] = {"dense fp32": teacher}
    for n, m in ((2, 4), (4, 8)):
        model, secs, peak = _measure(
            lambda n=n, m=m: shrink.prune(
                teacher, NMSparsity(n=n, m=m, epochs=budget, lr=LR), train=data.train, progress=False
            )
        )
        acc, size = _acc(model, data), artifact_bytes(model)
        packed = sum(1 for mod in model.modules() if hasattr(mod, "bits"))
        models[f"{n}:{m}"] = model
        rows.append([f"{n}:{m}", packed, acc, base_acc - acc, size, f"{100 * size / dense_bytes:.1f}%", secs, peak])
    lat = time_together({k: (lambda x, mod=mod: mod(x)) for k, mod in models.items()}, {32: x32}, rounds=9)
    for row in rows:
        t_c.add(*row, ms_cell(lat[row[0]][32]))
    t_c.note += " Latencies timed together in interleaved rounds."
    section.tables.append(t_c)
    return section
