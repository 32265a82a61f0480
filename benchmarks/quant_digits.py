"""Post-training quantization of the digits CNN: each method at W8A8 / W4A8, run in its real runtime.

Methods are entries of ``METHODS``: name -> builder(env) returning a :class:`Built` (runner, size in bytes, seconds
to quantize, runtime/execution label). A later section can add rows by adding builders.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import shrink
from benchmarks.baselines import EAGER, float_baselines, ms_cell, speedup, time_together
from benchmarks.common import Built, Section, Table, ort_quantize_static
from benchmarks.targets import ptq_digits_targets
from shrink.eval.metrics import accuracy, predict
from shrink.export.onnx import OnnxModel
from shrink.quant import INTEGER_OPS, Int8Static, ort_optimized_ops
from shrink.zoo import digits_data, digits_teacher

TITLE = "Post-training quantization: digits CNN (W8A8, W4A8)"


@dataclass
class Env:
    model: torch.nn.Module
    data: Any
    tmp: Path


def _onnx(env: Env, model: torch.nn.Module, name: str, seconds: float, label: str) -> Built:
    path = shrink.export.onnx(model, env.tmp / f"{name}.onnx", env.data.example_inputs)
    ops = ort_optimized_ops(path)
    integer = sorted(set(ops) & INTEGER_OPS)
    session = OnnxModel(path, threads=2)
    return Built(session, session.size_bytes, seconds, f"{label}; ORT ops: {', '.join(integer) or 'float only'}")


def _shrink(cfg: Int8Static) -> Callable[[Env], Built]:
    def build(env: Env) -> Built:
        t = time.perf_counter()
        q = shrink.quantize(env.model, cfg, calibration=env.data.calibration)
        seconds = time.perf_counter() - t
        return _onnx(env, q, f"shrink-{abs(hash(cfg.model_dump_json()))}", seconds, "onnxruntime, integer kernels")

    return build


def _ort_static(method: str) -> Callable[[Env], Built]:
    def build(env: Env) -> Built:
        from onnxruntime.quantization import CalibrationMethod

        fp32 = shrink.export.onnx(env.model, env.tmp / "fp32.onnx", env.data.example_inputs)
        feeds = [{"input": np.asarray(x[0].numpy())} for _, x in zip(range(8), env.data.calibration, strict=False)]
        out = env.tmp / f"ort-static-{method}.onnx"
        seconds = ort_quantize_static(fp32, out, feeds, calibrate_method=getattr(CalibrationMethod, method))
        s = OnnxModel(out, threads=2)
        ops = sorted(set(ort_optimized_ops(out)) & INTEGER_OPS)
        return Built(s, s.size_bytes, seconds, f"onnxruntime, integer kernels; ORT ops: {', '.join(ops)}")

    return build


def _torch_ao_fx(env: Env) -> Built:
    import copy

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(
            copy.deepcopy(env.model).eval(),
            get_default_qconfig_mapping("x86"),
            example_inputs=(env.data.example_inputs,),
        )
        with torch.no_grad():
            for _, (x, _) in zip(range(8), env.data.calibration, strict=False):
                prepared(x)
        q = convert_fx(prepared)
    seconds = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as d:
        torch.jit.save(torch.jit.trace(q, env.data.example_inputs), f"{d}/m.pt")
        size = Path(f"{d}/m.pt").stat().st_size
    return Built(lambda x: q(x), size, seconds, "torch.ao x86 quantized kernels (TorchScript file size)")


METHODS: dict[str, Callable[[Env], Built]] = {
    "shrink W8A8 min-max": _shrink(Int8Static(observer="minmax")),
    "shrink W8A8 percentile": _shrink(Int8Static(observer="percentile")),
    "shrink W8A8 entropy": _shrink(Int8Static(observer="entropy")),
    "shrink W4A8 min-max": _shrink(Int8Static(weight_bits=4, observer="minmax")),
    "shrink W4A8 MSE weights + bias corr.": _shrink(
        Int8Static(weight_bits=4, weight_observer="mse", bias_correction=True)
    ),
    "shrink W4A8 ACIQ + bias corr.": _shrink(
        Int8Static(weight_bits=4, observer="aciq_laplace", weight_observer="aciq_laplace", bias_correction=True)
    ),
    "ORT quantize_static W8A8 MinMax": _ort_static("MinMax"),
    "ORT quantize_static W8A8 Entropy": _ort_static("Entropy"),
    "ORT quantize_static W8A8 Percentile": _ort_static("Percentile"),
    "torch.ao FX static W8A8 (x86)": _torch_ao_fx,
}


def run(quick: bool) -> Section:
    torch.manual_seed(0)
    env = Env(digits_teacher(progress=False), digits_data(), Path(tempfile.mkdtemp(prefix="quant-digits-")))
    columns = ["method", "runtime / execution", "test acc %", "Δ acc (pts)", "size KiB", "b1 ms", "b1 x best float"]
    columns += ["b32 ms", "b32 x best float", "quantize s"]
    table = Table("Digits CNN: accuracy, size and latency of each PTQ method in its runtime", columns)
    x1 = env.data.example_inputs
    x32 = next(iter(env.data.calibration))[0][:32]
    built = float_baselines(env.model, x1, [x32, x1], env.tmp / "fp32.onnx")
    for name, build in METHODS.items():
        try:
            built[name] = build(env)
        except Exception as exc:  # a peer that fails is reported as such, never hidden
            table.add(name, f"failed: {type(exc).__name__}: {str(exc)[:80]}", *["-"] * (len(columns) - 2))
    acc = {name: accuracy(*predict(b.run, env.data.test)) for name, b in built.items()}
    lat = time_together({n: b.run for n, b in built.items()}, {1: x1, 32: x32}, rounds=5 if quick else 15)
    for name, b in built.items():
        timing = [c for k in (1, 32) for c in (ms_cell(lat[name][k]), f"{speedup(lat, name, k):.2f}x")]
        table.add(name, b.execution, acc[name], acc[name] - acc[EAGER], b.size_bytes / 1024, *timing, b.seconds)
    base = acc[EAGER]
    w8 = acc.get("shrink W8A8 min-max", float("nan"))
    w4 = acc.get("shrink W4A8 ACIQ + bias corr.", float("nan"))
    w4mm = acc.get("shrink W4A8 min-max", float("nan"))
    targets = ptq_digits_targets(base, w8, w4, w4mm)
    table.note = (
        "All rows timed together in interleaved rounds; 'x best float': the fastest float row of this run (fp32 "
        "eager, compiled, bf16 where native, ONNX Runtime) over the row. ⚠ unstable: slowest round over 1.5x the "
        "fastest. All shrink rows and ORT rows run real integer kernels in ONNX Runtime (2 threads); W4A8 weights "
        "hold 4-bit values in int8 storage (ORT has no int4 conv kernel). Peers have no W4A8 conv path."
    )
    return Section(
        TITLE,
        intro="Each method quantizes the trained digits teacher with 8 calibration batches.",
        tables=[table],
        targets=targets,
    )
