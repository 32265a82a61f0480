"""The targets of the digits, compression, distillation and pruning sections as pure functions of what a run
measured, so each can be tested with a result that just meets and one that just misses it. Goals are constants
here, fixed before any run."""

from __future__ import annotations

import math

from benchmarks.common import Target

__all__ = [
    "ptq_digits_targets",
    "advanced_quant_targets",
    "deep_compression_targets",
    "lowrank_target",
    "kd_targets",
    "unstructured_targets",
    "channel_digits_target",
    "resnet_speed_targets",
]

PTQ_W8_MAX_DROP, PTQ_W4_MAX_DROP = 0.3, 1.0
QAT_MAX_DROP, ZEROQ_MAX_DROP, INTONLY_MIN_AGREE = 1.5, 0.5, 0.99
DC_MIN_RATIO, DC_MAX_DROP, LOWRANK_MAX_DROP = 30.0, 1.0, 1.0
KD_MAX_BELOW_TEACHER = 1.0
SPARSE90_MAX_DROP, SPARSE90_MAX_FILE = 0.5, 0.2
CHANNEL_MAX_DROP, SPEEDUP_MIN, TP_TOLERANCE = 0.5, 2.5, 0.97


def ptq_digits_targets(base: float, w8: float, w4: float, w4_minmax: float) -> list[Target]:
    """Test accuracies (%): fp32, W8A8 min-max, W4A8 ACIQ + bias correction, W4A8 plain min-max."""
    return [
        Target(
            8,
            "digits int8 static PTQ in ONNX Runtime: accuracy drop",
            f"≤ {PTQ_W8_MAX_DROP} points",
            f"{base - w8:.2f} points",
            base - w8 <= PTQ_W8_MAX_DROP,
        ),
        Target(
            8,
            "digits W4A8 ACIQ + bias correction: accuracy drop",
            f"≤ {PTQ_W4_MAX_DROP} points",
            f"{base - w4:.2f} points",
            base - w4 <= PTQ_W4_MAX_DROP,
        ),
        Target(
            8,
            "digits W4A8 ACIQ + bias correction vs plain min-max W4A8",
            "better",
            f"{w4:.2f}% vs {w4_minmax:.2f}%",
            w4 > w4_minmax,
        ),
    ]


def advanced_quant_targets(fp32: float, qat_int: float, qat_sim: float, zeroq: float, agree: float) -> list[Target]:
    """Accuracies (%) of fp32, QAT W4A4 (integer-only and simulated), ZeroQ int8; ``agree``: the fraction of
    integer-only outputs within one step of ONNX Runtime's."""
    qat_drop = max(fp32 - qat_int, fp32 - qat_sim)
    return [
        Target(
            8,
            "Digits QAT W4A4: accuracy drop",
            f"≤ {QAT_MAX_DROP} points",
            f"{fp32 - qat_int:.2f} (integer-only), {fp32 - qat_sim:.2f} (simulated)",
            qat_drop <= QAT_MAX_DROP,
        ),
        Target(
            8,
            "Digits ZeroQ int8 with no real data: accuracy drop",
            f"≤ {ZEROQ_MAX_DROP} points",
            f"{fp32 - zeroq:.2f} (ONNX Runtime int8)",
            fp32 - zeroq <= ZEROQ_MAX_DROP,
        ),
        Target(
            8,
            "Integer-only executor vs ONNX Runtime int8: outputs within 1 step",
            f"≥ {INTONLY_MIN_AGREE:.0%}",
            f"{100 * agree:.2f}%",
            agree >= INTONLY_MIN_AGREE,
        ),
    ]


def deep_compression_targets(
    fp32_bytes: int, file_bytes: int, base: float, decoded: float, exact: bool
) -> list[Target]:
    """The Deep Compression file against the fp32 weights file, the decoded model's accuracy, the round trip."""
    ratio = fp32_bytes / file_bytes
    return [
        Target(
            4,
            f"Deep Compression file ≥ {DC_MIN_RATIO:.0f}x smaller than the fp32 weights file",
            f"≥ {DC_MIN_RATIO:.0f}x",
            f"{ratio:.1f}x ({fp32_bytes:,} -> {file_bytes:,} bytes)",
            ratio >= DC_MIN_RATIO,
        ),
        Target(
            4,
            "Deep Compression accuracy drop ≤ 1 point",
            f"≤ {DC_MAX_DROP:g}",
            f"{base - decoded:.2f} points",
            base - decoded <= DC_MAX_DROP,
        ),
        Target(4, "decode round trip exact", "bit-exact", str(exact), exact),
    ]


def lowrank_target(worst_drop: float) -> Target:
    return Target(
        4,
        "SVD/Tucker/CP at half the decomposed layers' params cost ≤ 1 point (digits)",
        f"drop ≤ {LOWRANK_MAX_DROP:g}",
        f"worst drop {worst_drop:.2f} points",
        worst_drop <= LOWRANK_MAX_DROP,
    )


def kd_targets(kd: float, hard: float, teacher: float) -> list[Target]:
    """Mean test accuracies (%) over the seeds of the KD student, the hard-label student and the teacher."""
    return [
        Target(
            4,
            "KD student beats hard-label student (mean over seeds)",
            "KD > hard",
            f"{kd:.2f}% vs {hard:.2f}%",
            kd > hard,
        ),
        Target(
            4,
            "KD student within 1 point of the teacher (mean over seeds)",
            f"≥ teacher - {KD_MAX_BELOW_TEACHER:g}",
            f"{kd:.2f}% vs {teacher:.2f}%",
            kd >= teacher - KD_MAX_BELOW_TEACHER,
        ),
    ]


def unstructured_targets(base: float, acc90: float, bytes90: int, dense_bytes: int) -> list[Target]:
    return [
        Target(
            3,
            "digits CNN 90% global unstructured (iterative + fine-tune): accuracy drop",
            f"≤ {SPARSE90_MAX_DROP} points",
            f"{base - acc90:.2f} points ({acc90:.2f}% vs {base:.2f}%)",
            base - acc90 <= SPARSE90_MAX_DROP,
        ),
        Target(
            3,
            "digits CNN 90% sparse: file on disk vs dense fp32 file",
            f"≤ {SPARSE90_MAX_FILE:.0%}",
            f"{100 * bytes90 / dense_bytes:.1f}% ({bytes90:,} vs {dense_bytes:,} bytes)",
            bytes90 <= SPARSE90_MAX_FILE * dense_bytes,
        ),
    ]


def channel_digits_target(lasso: float, l1: float, torch_pruning: float | None) -> Target:
    """Accuracy drops (points) at 50% channels: shrink lasso, shrink l1, Torch-Pruning (None: it failed)."""
    best = min(lasso, l1)
    best = l1 if math.isnan(lasso) else (lasso if math.isnan(l1) else best)
    tp = f"{torch_pruning:.2f} pt" if torch_pruning is not None else "failed"
    return Target(
        3,
        "Digits CNN, 50% of channels removed + 5 epochs fine-tuning",
        f"drop ≤ {CHANNEL_MAX_DROP} pt and ≤ Torch-Pruning's",
        f"shrink drop {best:.2f} pt (lasso {lasso:.2f}, l1 {l1:.2f}); Torch-Pruning {tp}",
        best <= CHANNEL_MAX_DROP and (torch_pruning is None or best <= torch_pruning + 1e-9),
    )


def resnet_speed_targets(s: dict[str, float], tp: dict[str, float] | None) -> list[Target]:
    """``s`` / ``tp``: shrink's / Torch-Pruning's 50%-channel ResNet speed-ups (e1, e8: eager vs dense eager; o1,
    o8: ONNX Runtime vs the dense model's fastest float run; macs)."""
    e1, e8, o1, o8 = (s.get(k, math.nan) for k in ("e1", "e8", "o1", "o8"))
    eager_ok = min(e1, e8) >= SPEEDUP_MIN and (
        tp is None or (e1 >= tp["e1"] * TP_TOLERANCE and e8 >= tp["e8"] * TP_TOLERANCE)
    )
    tp_txt = (
        f"Torch-Pruning {tp['e1']:.2f}x / {tp['e8']:.2f}x (MACs {tp['macs']:.2f}x)" if tp else "Torch-Pruning failed"
    )
    return [
        Target(
            3,
            "ResNet-18 224x224, 50% channels: eager CPU speedup b1 / b8 (2 threads)",
            f"≥ {SPEEDUP_MIN}x and ≥ Torch-Pruning's (3% timing tolerance)",
            f"{e1:.2f}x / {e8:.2f}x (MACs {s.get('macs', math.nan):.2f}x); {tp_txt}",
            bool(eager_ok),
        ),
        Target(
            3,
            "ResNet-18 224x224, 50% channels, ONNX Runtime (BN folded) vs the dense model's fastest float run",
            f"≥ {SPEEDUP_MIN}x at b1 and b8",
            f"{o1:.2f}x / {o8:.2f}x",
            min(o1, o8) >= SPEEDUP_MIN,
        ),
    ]
