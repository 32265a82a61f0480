"""Structured pruning (physical channel / head removal): accuracy after fine-tuning, MACs, parameters and measured
CPU latency — shrink side by side with Torch-Pruning (same ratio, same importance, same fine-tuning budget), one run.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

import shrink
from benchmarks.baselines import time_together
from benchmarks.common import Fact, Section, Table, latency, run_measured
from benchmarks.targets import channel_digits_target, resnet_speed_targets
from shrink.counts import count_macs
from shrink.data import call_model
from shrink.eval.metrics import accuracy, embedding_fidelity, predict
from shrink.pruning.structured import ChannelPruning
from shrink.train import fit
from shrink.zoo import digits_data, digits_teacher, resnet18

TITLE = "Structured pruning: channels and heads removed (digits CNN, ResNet-18, MiniLM)"
LR = 1e-3
EPOCHS = 5


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def tp_prune(original: nn.Module, x: torch.Tensor, ratio: float, classifier: str) -> nn.Module:
    """Torch-Pruning's documented path on a copy: MagnitudePruner with L1 group importance, one step, the final
    classifier ignored (as shrink keeps model outputs)."""
    import torch_pruning as tp

    model = copy.deepcopy(original)
    pruner = tp.pruner.MagnitudePruner(
        model,
        x,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio,
        ignored_layers=[model.get_submodule(classifier)],
    )
    pruner.step()
    return model.eval()


def _tp_or_error(fn: Any) -> tuple[nn.Module | None, str]:
    try:
        return fn(), ""
    except Exception as exc:  # record the peer's failure in the table instead of crashing the section
        return None, f"Torch-Pruning failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"


def _digits(quick: bool, section: Section) -> None:
    data = digits_data()
    teacher = digits_teacher(progress=False)
    x = data.example_inputs
    base_acc = accuracy(*predict(teacher, data.test))
    base_macs = count_macs(teacher, x)
    table = Table(
        f"Digits CNN: channels removed, then {EPOCHS} epochs of fine-tuning (Adam, lr {LR})",
        [
            "ratio",
            "method",
            "params",
            "MACs",
            "acc. before FT %",
            "acc. after FT %",
            "drop (pt)",
            "prune s / peak MiB",
        ],
    )
    table.add("0", "dense fp32", _params(teacher), base_macs, f"{base_acc:.2f}", f"{base_acc:.2f}", "0", "-")
    drops: dict[tuple[float, str], float] = {}
    for ratio in (0.5,) if quick else (0.3, 0.5, 0.7):
        runs: dict[str, Any] = {
            "shrink l1": lambda r=ratio: shrink.prune(
                teacher, ChannelPruning(ratio=r, importance="l1"), example_inputs=x
            ),
            "shrink lasso": lambda r=ratio: shrink.prune(
                teacher, ChannelPruning(ratio=r, importance="lasso", batches=8), example_inputs=x, train=data.train
            ),
            "Torch-Pruning l1": lambda r=ratio: tp_prune(teacher, x, r, "classifier.4"),
        }
        for name, make in runs.items():
            torch.manual_seed(0)
            (model, err), secs, peak = run_measured(
                lambda make=make, name=name: _tp_or_error(make) if name.startswith("Torch") else (make(), "")
            )
            if model is None:
                table.add(ratio, name, "-", "-", "-", "-", err, "-")
                continue
            before = accuracy(*predict(model, data.test))
            torch.manual_seed(0)
            fit(model, data.train, epochs=EPOCHS, lr=LR, progress=False, desc=f"{name} fine-tune")
            after = accuracy(*predict(model, data.test))
            drops[(ratio, name)] = base_acc - after
            table.add(
                ratio,
                name,
                _params(model),
                count_macs(model, x),
                f"{before:.2f}",
                f"{after:.2f}",
                f"{base_acc - after:.2f}",
                f"{secs:.2f} / {peak:.0f}",
            )
    section.tables.append(table)
    nan = float("nan")
    section.targets.append(
        channel_digits_target(
            drops.get((0.5, "shrink lasso"), nan),
            drops.get((0.5, "shrink l1"), nan),
            drops.get((0.5, "Torch-Pruning l1")),
        )
    )


def _lat(fn: Any, bs: int, reps: int) -> float:
    return latency(fn, bs, reps=reps, warmup=2).median_ms


def _interleaved(
    fns: dict[str, Any], xs: dict[int, torch.Tensor], reps: int, rounds: int
) -> dict[str, dict[int, list[float]]]:
    """Median latency of every ``fns[name](x)`` per round, the candidates taking turns (forward order in even rounds,
    reverse in odd ones) so that load drift and order effects on a shared machine hit all of them alike."""
    out: dict[str, dict[int, list[float]]] = {k: {bs: [] for bs in xs} for k in fns}
    for r in range(rounds):
        for name in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            for bs, x in xs.items():
                out[name][bs].append(latency(lambda f=fns[name], x=x: f(x), bs, reps=reps, warmup=1).median_ms)
    return out


def _speedup(base: list[float], other: list[float]) -> float:
    """Median over rounds of the same-round ratio (pairs measured back to back, so shared load largely cancels)."""
    return statistics.median(b / o for b, o in zip(base, other, strict=True))


def _resnet(quick: bool, section: Section) -> None:
    reps, rounds = (4, 3) if quick else (8, 9)
    x1 = torch.randn(1, 3, 224, 224)
    xs = {1: x1, 8: torch.randn(8, 3, 224, 224)}
    dense = resnet18().eval()
    base_macs = count_macs(dense, x1)
    models: dict[str, nn.Module] = {"dense": dense}
    rows: list[tuple[float, str, str]] = []  # (ratio, method, key in models or an error)
    made: dict[str, str] = {}  # key -> "prune seconds / peak MiB"
    for ratio in (0.5,) if quick else (0.3, 0.5, 0.7):
        makers = {
            "shrink": lambda r=ratio: shrink.prune(dense, ChannelPruning(ratio=r, importance="l1"), example_inputs=x1),
            "Torch-Pruning": lambda r=ratio: tp_prune(dense, x1, r, "fc"),
        }
        for name, make in makers.items():
            (model, err), secs, peak = run_measured(
                lambda make=make, name=name: _tp_or_error(make) if name == "Torch-Pruning" else (make(), "")
            )
            key = f"{name} {ratio}"
            made[key] = f"{secs:.2f} / {peak:.0f}"
            if model is not None:
                models[key] = model.eval()  # every candidate timed in eval mode under the same inference_mode
            rows.append((ratio, name, key if model is not None else err))
    eager = _interleaved(dict(models), xs, reps, rounds)
    ort_keys = ["dense"] + [k for r, n, k in rows if k in models and (n == "shrink" or r == 0.5)]
    with tempfile.TemporaryDirectory() as d:
        sessions = {  # eval-mode export folds BatchNorm into the convolutions
            k: shrink.export.OnnxModel(shrink.export.onnx(models[k], Path(d) / f"{i}.onnx", x1), threads=2)
            for i, k in enumerate(ort_keys)
        }
        ort = _interleaved(sessions, xs, reps, rounds)
        del sessions
    med = {
        k: {bs: statistics.median(v) for bs, v in t.items()}
        for k, t in (eager | {f"ort {k}": v for k, v in ort.items()}).items()
    }
    table = Table(
        "ResNet-18-style net, 224x224, L1 channel pruning: size and measured CPU latency (2 threads, median ms)",
        [
            "ratio",
            "method",
            "params",
            "MACs ratio",
            "eager b1",
            "eager b8",
            "speedup b1",
            "speedup b8",
            "ORT b1",
            "ORT b8",
            "ORT speedup b1",
            "ORT speedup b8",
            "prune s / peak MiB",
        ],
    )
    table.add(
        "0",
        "dense fp32 (eager; ORT)",
        _params(dense),
        "1.00x",
        f"{med['dense'][1]:.1f}",
        f"{med['dense'][8]:.1f}",
        "1.00x",
        "1.00x",
        f"{med['ort dense'][1]:.1f}",
        f"{med['ort dense'][8]:.1f}",
        "-",
        "-",
        "-",
    )
    res: dict[tuple[float, str], dict[str, float]] = {}
    for ratio, name, key in rows:
        if key not in models:
            table.add(ratio, name, *(["-"] * 9), key, made[f"{name} {ratio}"])
            continue
        model = models[key]
        macs = base_macs / count_macs(model, x1)
        r = {"macs": macs, **{f"e{b}": _speedup(eager["dense"][b], eager[key][b]) for b in xs}}
        if key in ort:  # against the dense model's fastest float execution: the faster of eager and ORT
            r |= {f"o{b}": min(med["dense"][b], med["ort dense"][b]) / med[f"ort {key}"][b] for b in xs}
        res[(ratio, name)] = r
        table.add(
            ratio,
            name,
            _params(model),
            f"{macs:.2f}x",
            f"{med[key][1]:.1f}",
            f"{med[key][8]:.1f}",
            f"{r['e1']:.2f}x",
            f"{r['e8']:.2f}x",
            *(
                [f"{med[f'ort {key}'][1]:.1f}", f"{med[f'ort {key}'][8]:.1f}", f"{r['o1']:.2f}x", f"{r['o8']:.2f}x"]
                if key in ort
                else ["-"] * 4
            ),
            made[key],
        )
    table.note = (
        f"All models in eval mode, timed under the same inference_mode in {rounds} interleaved rounds (each round "
        f"times every model once, the order reversed every other round); latency is the median over rounds, eager "
        "speedup the median of the same-round ratios against the dense fp32 model. ONNX Runtime runs the pruned "
        "model exported in eval mode (BatchNorm folded into the convolutions), timed in its own interleaved rounds "
        "after the eager ones, the dense model's export among them; ORT speedup is against the dense model's "
        "fastest float execution (the faster of its eager and ORT medians). torch.compile is not timed for ResNet "
        "here. Prune s / peak MiB: wall time of the pruning call "
        "(tracing, importance, slicing) and its peak resident memory above the start."
    )
    section.tables.append(table)
    s, t = res.get((0.5, "shrink"), {}), res.get((0.5, "Torch-Pruning"))
    section.targets += resnet_speed_targets(s, t)


def _minilm(quick: bool, section: Section) -> None:
    from shrink.zoo.minilm import load_minilm, minilm_data

    data = minilm_data(limit=192 if quick else None)
    model = load_minilm()
    cfg = ChannelPruning(ratio=0.25, head_ratio=2 / 12, importance="l1")
    pruned = shrink.prune(model, cfg, example_inputs=data.example_inputs)
    with torch.no_grad():
        ref = torch.cat([call_model(model, b) for b in data.test])
        emb = torch.cat([call_model(pruned, b) for b in data.test])
    fid = embedding_fidelity(ref, emb)
    pair = {"dense": model, "pruned": pruned}
    timed = time_together(
        {k: (lambda x, m=m: call_model(m, x)) for k, m in pair.items()},
        {1: data.example_inputs, len(data.test[0]["input_ids"]): data.test[0]},
        rounds=5 if quick else 15,
    )
    lat = {k: tuple(st.median_ms for st in timed[k].values()) for k in pair}
    heads = pruned.encoder.encoder.layer[0].attention.self.num_attention_heads
    ffn = pruned.encoder.encoder.layer[0].intermediate.dense.out_features
    table = Table(
        "MiniLM (all-MiniLM-L6-v2): 25% of FFN dims and 2 of 12 heads per layer removed, no recovery training",
        [
            "model",
            "heads/layer",
            "FFN dim",
            "params",
            "cos mean",
            "cos min",
            "NN agreement",
            "latency b1 (ms)",
            f"latency b{data.test[0]['input_ids'].shape[0]} (ms)",
        ],
    )
    table.add("dense", 12, 1536, _params(model), "1", "1", "1", f"{lat['dense'][0]:.2f}", f"{lat['dense'][1]:.1f}")
    table.add(
        "pruned",
        heads,
        ffn,
        _params(pruned),
        f"{fid['cos_mean']:.4f}",
        f"{fid['cos_min']:.4f}",
        f"{fid['nn_agreement']:.3f}",
        f"{lat['pruned'][0]:.2f}",
        f"{lat['pruned'][1]:.1f}",
    )
    table.note = (
        "Fidelity is cosine similarity to the dense model's embeddings on the project corpus; recovery by "
        "distillation belongs to the distillation issue."
    )
    section.tables.append(table)
    section.facts.append(
        Fact(
            3,
            "MiniLM: 25% FFN dims + 2/12 heads per layer removed",
            f"{heads} heads, FFN {ffn}; cos mean {fid['cos_mean']:.3f}; b1 {lat['dense'][0]:.1f} -> "
            f"{lat['pruned'][0]:.1f} ms",
        )
    )


def run(quick: bool) -> Section:
    section = Section(TITLE, intro=__doc__.strip())
    torch.manual_seed(0)
    _digits(quick, section)
    _resnet(quick, section)
    _minilm(quick, section)
    return section
