"""Every compression family applied to one seed of the MNIST-1D CNN with shrink's own verbs and configs: the
settings are fixed here, before any run, and nothing is chosen on the test split. ``judge_seed`` returns each
method's validation and test accuracy for that seed; ``benchmarks/mnist1d.py`` turns the seeds into intervals."""

from __future__ import annotations

import copy
import traceback
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import shrink
from shrink.api import Context
from shrink.autosearch.apply import apply_policy, calibrate_inputs
from shrink.autosearch.mixed_precision import MixedPrecision, plan_mixed_precision
from shrink.counts import count_params
from shrink.deepcomp import DeepCompression
from shrink.distillation import KnowledgeDistillation
from shrink.eval.metrics import accuracy, predict
from shrink.hw import LayerChoice, trace_layers
from shrink.pruning import ChannelPruning, IterativePruning
from shrink.quant import QAT, Binarize, Int8Static, ZeroQ
from shrink.train import FineTune
from shrink.zoo.mnist1d import mnist1d_data
from shrink.zoo.mnist1d_models import Mnist1dCNN, mnist1d_model, one_thread

__all__ = ["METHODS", "STUDENT_CHANNELS", "BN_FP32", "BN_REAL", "BN_ZEROQ", "judge_seed", "student_ratio"]

#: KD student: the teacher's layout at 10 channels instead of 25 (1,190 vs 5,210 parameters, ratio 0.23)
STUDENT_CHANNELS = 10
STUDENT_EPOCHS, STUDENT_LR = 60, 1e-2
#: chosen on the validation split, seeds 0-1, by ``python -m benchmarks.mnist1d_select`` (2026-12-02; grid in
#: that module): hard labels lr 1e-2 val 82.6% (3e-3: 62.9%); KD best at lr 1e-2, T=2, alpha=0.5: val 78.6%
#: (T=4, alpha=0.7: 74.8%; lr 3e-3: <= 59%); unstructured 90% fine-tuning lr 1e-2 val 35.4% (1e-3: 18.2%; per-layer
#: scope no better); channels 50% fine-tuning lr 1e-2 val 85.5% (1e-3: 71.7%)
KD_T, KD_ALPHA = 2.0, 0.5
PRUNE_LR = 1e-2
FT_LR = 1e-3  # QAT and Deep Compression (not searched)
PRUNE_CYCLES, PRUNE_EPOCHS_PER_CYCLE = 3, 8
CHANNEL_FT_EPOCHS = 20
QAT_EPOCHS, BIN_EPOCHS, BIN_LR = 20, 30, 2e-3
ZEROQ_SAMPLES, ZEROQ_ITERS = 128, 100

BN_FP32 = "fp32 CNN+BN (ZeroQ's teacher)"
BN_REAL = "CNN+BN: PTQ W8A8, real-data calibration"
BN_ZEROQ = "CNN+BN: ZeroQ W8A8 (no real data)"


def student_ratio() -> float:
    return count_params(Mnist1dCNN(channels=STUDENT_CHANNELS))[0] / count_params(Mnist1dCNN())[0]


def _student(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return Mnist1dCNN(channels=STUDENT_CHANNELS)


def _hard(teacher: nn.Module, data: Any, seed: int) -> nn.Module:
    return shrink.finetune(
        _student(seed), FineTune(epochs=STUDENT_EPOCHS, lr=STUDENT_LR), train=data.train, progress=False
    )


def _kd(teacher: nn.Module, data: Any, seed: int) -> nn.Module:
    cfg = KnowledgeDistillation(epochs=STUDENT_EPOCHS, lr=STUDENT_LR, temperature=KD_T, alpha=KD_ALPHA)
    return shrink.distill(_student(seed), teacher, cfg, train=data.train, progress=False)


def _unstructured(teacher: nn.Module, data: Any, seed: int) -> nn.Module:
    cfg = IterativePruning(sparsity=0.9, cycles=PRUNE_CYCLES, epochs_per_cycle=PRUNE_EPOCHS_PER_CYCLE, lr=PRUNE_LR)
    return shrink.prune(teacher, cfg, train=data.train, progress=False)


def _channels(teacher: nn.Module, data: Any, seed: int) -> nn.Module:
    small = shrink.prune(teacher, ChannelPruning(ratio=0.5), example_inputs=data.example_inputs, progress=False)
    return shrink.finetune(small, FineTune(epochs=CHANNEL_FT_EPOCHS, lr=PRUNE_LR), train=data.train, progress=False)


def _channels_tp(teacher: nn.Module, data: Any, seed: int) -> nn.Module:
    """Torch-Pruning's documented path (L1 magnitude, one step, the head kept) at the same ratio, then the same
    fine-tuning as shrink's row."""
    from benchmarks.prune_structured import tp_prune

    small = tp_prune(teacher, data.example_inputs, 0.5, "linear")
    return shrink.finetune(small, FineTune(epochs=CHANNEL_FT_EPOCHS, lr=PRUNE_LR), train=data.train, progress=False)


def _ptq(cfg: Int8Static) -> Callable[[nn.Module, Any, int], nn.Module]:
    def run(teacher: nn.Module, data: Any, seed: int) -> nn.Module:
        return shrink.quantize(
            teacher, cfg, calibration=data.calibration, example_inputs=data.example_inputs, progress=False
        )

    return run


def _qat(teacher: nn.Module, data: Any, seed: int) -> nn.Module:
    cfg = QAT(weight_bits=4, activation_bits=4, epochs=QAT_EPOCHS, lr=FT_LR)
    return shrink.quantize(teacher, cfg, train=data.train, calibration=data.calibration, progress=False)


def _bn_teacher(seed: int) -> nn.Module:
    """ZeroQ synthesizes inputs from BatchNorm statistics, which the paper's CNN lacks: its rows use the same CNN
    with BatchNorm after each convolution (zoo ``cnn_bn``, same seed), and compare with real calibration on it."""
    return mnist1d_model("cnn_bn", seed=seed)


def _bn_fp32(teacher: nn.Module, data: Any, seed: int) -> nn.Module:
    return _bn_teacher(seed)


def _bn_real(teacher: nn.Module, data: Any, seed: int) -> nn.Module:
    return _ptq(Int8Static())(_bn_teacher(seed), data, seed)


def _zeroq(teacher: nn.Module, data: Any, seed: int) -> nn.Module:
    cfg = ZeroQ(num_samples=ZEROQ_SAMPLES, iterations=ZEROQ_ITERS, seed=seed)
    return shrink.quantize(_bn_teacher(seed), cfg, example_inputs=data.example_inputs, progress=False)


def _binary(teacher: nn.Module, data: Any, seed: int) -> nn.Module:
    cfg = Binarize(epochs=BIN_EPOCHS, lr=BIN_LR)
    return shrink.quantize(teacher, cfg, train=data.train, calibration=data.calibration, progress=False)


def _uniform4(teacher: nn.Module, data: Any, seed: int) -> nn.Module:
    names = [s.name for s in trace_layers(teacher, data.example_inputs)]
    qp = calibrate_inputs(teacher, names, data.calibration)
    return apply_policy(teacher, {n: LayerChoice(bits=4) for n in names}, input_qparams=qp)


def _mixed4(teacher: nn.Module, data: Any, seed: int) -> nn.Module:
    """Per-layer bits (MILP over measured sensitivities) at uniform 4-bit's weight bytes; 8-bit inputs."""
    names = [s.name for s in trace_layers(teacher, data.example_inputs)]
    qp = calibrate_inputs(teacher, names, data.calibration)
    ctx = Context(
        example_inputs=data.example_inputs, calibration=data.calibration, val=data.val, train=data.train, progress=False
    )
    plan, _ = plan_mixed_precision(teacher, MixedPrecision(budget="bytes", budget_bits=4), ctx)
    return apply_policy(teacher, plan.policy, input_qparams=qp)


def _deep(teacher: nn.Module, data: Any, seed: int) -> nn.Module:
    cfg = DeepCompression(sparsity=0.9, prune_epochs=PRUNE_CYCLES * PRUNE_EPOCHS_PER_CYCLE, cluster_epochs=5, lr=FT_LR)
    return shrink.deep_compress(teacher, cfg, train=data.train, progress=False)


TP_CHANNELS = "channels 50%, Torch-Pruning (+ fine-tune)"
#: row name -> builder(teacher, data, seed). The order is the table's.
METHODS: dict[str, Callable[[nn.Module, Any, int], nn.Module]] = {
    "fp32 CNN (teacher)": lambda teacher, data, seed: teacher,
    f"student {STUDENT_CHANNELS} ch, hard labels": _hard,
    f"student {STUDENT_CHANNELS} ch, KD": _kd,
    "unstructured 90% (iterative + fine-tune)": _unstructured,
    "channels 50% (+ fine-tune)": _channels,
    TP_CHANNELS: _channels_tp,
    "PTQ W8A8 (percentile)": _ptq(Int8Static()),
    "PTQ W4A8 min-max": _ptq(Int8Static(weight_bits=4, observer="minmax", weight_observer="minmax")),
    "PTQ W4A8 ACIQ + bias correction": _ptq(
        Int8Static(weight_bits=4, observer="aciq_laplace", weight_observer="aciq_laplace", bias_correction=True)
    ),
    "uniform W4A8 (search grid, fake-quant)": _uniform4,
    "mixed precision @ uniform 4-bit bytes": _mixed4,
    "QAT W4A4 (LSQ)": _qat,
    BN_FP32: _bn_fp32,
    BN_REAL: _bn_real,
    BN_ZEROQ: _zeroq,
    "binarized (BNN/XNOR, 8-bit first/last)": _binary,
    "Deep Compression (90% + k-means + Huffman)": _deep,
}


def _accuracies(model: nn.Module, data: Any) -> tuple[float, float]:
    return accuracy(*predict(model, data.val)), accuracy(*predict(model, data.test))


def judge_seed(seed: int, only: tuple[str, ...] = ()) -> dict[str, tuple[float, float] | str]:
    """Each method on the CNN of ``seed`` (teacher, data order and student init all from ``seed``), one thread:
    row -> (val %, test %), or the error text when shrink refuses the model."""
    out: dict[str, tuple[float, float] | str] = {}
    with one_thread():
        teacher = mnist1d_model("cnn", seed=seed)
        for name, build in METHODS.items():
            if only and name not in only:
                continue
            data = mnist1d_data(seed=seed)
            torch.manual_seed(seed)
            try:
                model = build(copy.deepcopy(teacher), data, seed)
            except Exception as exc:  # a family that refuses this model is a result, shown in its row
                out[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                traceback.print_exc()
                continue
            out[name] = _accuracies(model, data)
    return out
