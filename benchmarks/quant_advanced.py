"""Advanced quantization of the digits CNN: QAT W4A4 (LSQ), a binarized network (1-bit packed), data-free ZeroQ
int8, and the integer-only executor against ONNX Runtime's int8 model — all measured in one run against the fp32
model measured in the same run."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

import shrink
from benchmarks.common import Fact, Section, Table, run_measured
from benchmarks.targets import advanced_quant_targets
from shrink.eval.metrics import accuracy, predict
from shrink.export import OnnxModel
from shrink.export.artifact import artifact_bytes
from shrink.quant import QAT, Binarize, Int8Static, ZeroQ, integer_model
from shrink.quant.layers.binary_layers import PackedBinaryConv2d, PackedBinaryLinear
from shrink.quant.runtimes.intonly import agreement_within_one_step
from shrink.zoo import digits_data, digits_teacher

TITLE = "Advanced quantization (digits CNN): QAT, binarization, ZeroQ, integer-only inference"


class _NoRealData:
    """Stands in for the real data in the ZeroQ run: reading it is an error, so 'no real data used' is checked."""

    def __iter__(self):  # noqa: ANN204
        raise RuntimeError("ZeroQ read real data")


def _acc(model, data) -> float:  # noqa: ANN001
    return accuracy(*predict(model, data.test))


def _onnx(model: nn.Module, example: torch.Tensor, directory: Path, name: str) -> OnnxModel:
    path = shrink.export.onnx(model, directory / f"{name}.onnx", example)
    return OnnxModel(path, threads=2, execution="int8 (real, integer kernels)")


def _binary_bytes(model: nn.Module) -> tuple[int, int]:
    """(bytes of the packed sign bits, fp32 bytes the same weights would take)."""
    packed = [m for m in model.modules() if isinstance(m, (PackedBinaryConv2d, PackedBinaryLinear))]
    return sum(m.packed.numel() for m in packed), sum(4 * int(np.prod(m.weight_shape)) for m in packed)


def run(quick: bool) -> Section:
    torch.manual_seed(0)
    data = digits_data()
    teacher = digits_teacher(progress=False)
    x_test = torch.cat([b[0] for b in data.test])
    fp32_acc = _acc(teacher, data)
    fp32_bytes = artifact_bytes(teacher)
    qat_epochs, bin_epochs = (1, 2) if quick else (4, 8)
    zq_samples, zq_iters = (32, 40) if quick else (128, 100)
    tmp = Path(tempfile.mkdtemp(prefix="bench-quant-adv-"))

    # QAT W4A4 (LSQ, BN folded), distilled from the fp32 model
    qat, qat_s, _ = run_measured(
        lambda: shrink.quantize(
            teacher,
            QAT(weight_bits=4, activation_bits=4, epochs=qat_epochs, distill_alpha=0.5),
            train=data.train,
            calibration=data.calibration,
            progress=False,
        )
    )
    qat_sim = _acc(qat, data)
    qat_int = integer_model(qat)
    qat_int_acc = _acc(qat_int, data)
    qat_ort_acc = _acc(_onnx(qat, data.example_inputs, tmp, "qat"), data)

    # binarized network (BNN / XNOR-Net, first and last layer at 8 bits)
    binary, bin_s, _ = run_measured(
        lambda: shrink.quantize(
            teacher, Binarize(epochs=bin_epochs), train=data.train, calibration=data.calibration, progress=False
        )
    )
    bin_acc = _acc(binary, data)
    bin_bytes = artifact_bytes(binary)
    bits_bytes, bits_fp32 = _binary_bytes(binary)

    # ZeroQ: int8 static PTQ calibrated on synthetic inputs only
    notes: list[str] = []
    zq_cfg = ZeroQ(num_samples=zq_samples, iterations=zq_iters)
    zq, zq_s, _ = run_measured(
        lambda: shrink.quantize(
            teacher,
            zq_cfg,
            example_inputs=data.example_inputs,
            calibration=_NoRealData(),
            train=_NoRealData(),
            progress=False,
            notes=notes,
        )
    )
    zq_sim = _acc(zq, data)
    zq_ort_acc = _acc(_onnx(zq, data.example_inputs, tmp, "zeroq"), data)
    real = shrink.quantize(
        teacher, Int8Static(), calibration=data.calibration, example_inputs=data.example_inputs, progress=False
    )
    real_ort = _onnx(real, data.example_inputs, tmp, "int8")
    real_ort_acc = _acc(real_ort, data)

    # integer-only executor vs ONNX Runtime (graph optimizations on: fused integer kernels)
    int_model = integer_model(real)
    codes, int_s, _ = run_measured(lambda: int_model.run(int_model.quantize_input(x_test)))
    ort_out = real_ort(x_test).numpy()
    agree = agreement_within_one_step(int_model, codes, ort_out)
    exact = float(
        (np.abs(int_model.dequantize_output(codes).numpy() - ort_out) <= 1e-4 * float(int_model.output_step())).mean()
    )
    int_acc = _acc(int_model, data)

    t = Table(
        "Digits CNN: advanced quantization, accuracy on the 360 test images",
        ["model", "execution", "accuracy (%)", "drop vs fp32 (points)", "file on disk (KiB)", "time (s)"],
    )
    t.add("fp32", "PyTorch eager", fp32_acc, 0.0, fp32_bytes / 1024, "")
    t.add(
        f"QAT W4A4 (LSQ, {qat_epochs} epochs)",
        "fake-quant (simulated)",
        qat_sim,
        fp32_acc - qat_sim,
        artifact_bytes(qat) / 1024,
        qat_s,
    )
    t.add(
        "QAT W4A4, integer-only executor",
        "int32 accumulators, 4-bit activation codes",
        qat_int_acc,
        fp32_acc - qat_int_acc,
        "",
        "",
    )
    t.add(
        "QAT W4A4, ONNX Runtime",
        "integer kernels (u8 activation grid, see note)",
        qat_ort_acc,
        fp32_acc - qat_ort_acc,
        "",
        "",
    )
    t.add(
        f"binarized (BNN/XNOR, {bin_epochs} epochs)",
        PackedBinaryConv2d.shrink_execution,
        bin_acc,
        fp32_acc - bin_acc,
        bin_bytes / 1024,
        bin_s,
    )
    t.add(
        f"ZeroQ int8 ({zq_samples} synthetic inputs)",
        "fake-quant (simulated)",
        zq_sim,
        fp32_acc - zq_sim,
        artifact_bytes(zq) / 1024,
        zq_s,
    )
    t.add("ZeroQ int8, ONNX Runtime", "int8 integer kernels", zq_ort_acc, fp32_acc - zq_ort_acc, "", "")
    t.add(
        "int8 static PTQ (real calibration), ONNX Runtime",
        "int8 integer kernels",
        real_ort_acc,
        fp32_acc - real_ort_acc,
        "",
        "",
    )
    t.add(
        "int8 static PTQ, integer-only executor",
        "int32 accumulators, fixed-point requantization",
        int_acc,
        fp32_acc - int_acc,
        "",
        int_s,
    )
    t.note = (
        "Time: compression wall time (QAT / binarization include training); for the integer-only executor, "
        "one pass over the test set in numpy. ONNX Runtime runs 4-bit activations on its u8 grid (QDQ has no "
        "4-bit activation clamp), so its QAT row is not a strict A4 figure; the integer-only executor clamps "
        "to the 4-bit range and is."
    )

    b = Table("Binarized network: storage", ["what", "bytes"])
    b.add("binary layers' weights as fp32", bits_fp32)
    b.add("binary layers' weights, 1-bit packed", bits_bytes)
    b.add("whole model file, fp32", fp32_bytes)
    b.add("whole model file, binarized (8-bit first/last, BN, alpha)", bin_bytes)

    a = Table(
        "Integer-only executor vs ONNX Runtime int8 (same network, same scales)",
        ["outputs compared", "within 1 quantization step (%)", "bit-exact (%)", "argmax agreement (%)"],
    )
    int_real = int_model.dequantize_output(codes).numpy()
    a.add(codes.size, 100 * agree, 100 * exact, 100 * float((int_real.argmax(1) == ort_out.argmax(1)).mean()))

    targets = advanced_quant_targets(fp32_acc, qat_int_acc, qat_sim, zq_ort_acc, agree)
    intro = (
        f"fp32 baseline measured in this run: {fp32_acc:.2f}%. ZeroQ: {notes[0]}. "
        "The ZeroQ run receives data objects that raise if iterated, so no real sample was read."
    )
    facts = [Fact(8, "Binarized network accuracy", f"{bin_acc:.2f}% at {fp32_bytes / bin_bytes:.1f}x smaller file")]
    return Section(TITLE, intro=intro, tables=[t, b, a], targets=targets, facts=facts)
