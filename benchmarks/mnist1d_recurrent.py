"""Recurrent models on MNIST-1D (issue 16, item 4): the paper's GRU and an LSTM with attention pooling, fp32 vs
int8: dynamic int8 in PyTorch by shrink (``Int8Dynamic(backend="torch")``) and by
``torch.ao.quantization.quantize_dynamic``; in ONNX Runtime by shrink (dynamic: LSTM on ``DynamicQuantizeLSTM``;
static: calibrated QDQ Linear layers) and by ONNX Runtime's own ``quantize_dynamic``. Accuracy, file size and
batch-1 / batch-32 latency, all measured in this run. Each row names the layers that run on int8 kernels and the
ones that stay float (ONNX Runtime has no int8 GRU kernel, and its static QDQ path none for recurrent layers)."""

from __future__ import annotations

import copy
import io
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import nn

import shrink
from benchmarks.baselines import float_baselines, ms_cell, speedup, time_together
from benchmarks.common import THREADS, Table
from shrink.eval.metrics import accuracy, predict
from shrink.export.onnx import OnnxModel
from shrink.quant import INTEGER_OPS, Int8Dynamic, Int8Static, ort_optimized_ops
from shrink.select import Selector
from shrink.zoo.mnist1d import mnist1d_data
from shrink.zoo.mnist1d_models import MNIST1D_MODELS, mnist1d_model

__all__ = ["recurrent_table", "RECURRENT", "GRU_EPOCHS"]

#: the paper's GRU costs ~10x the CNN's training time on a CPU; it trains this many epochs (paper: 200)
GRU_EPOCHS = 100
#: (zoo name, epochs): the paper-protocol models the section's workers train (seed 0)
RECURRENT = (("gru", GRU_EPOCHS), ("lstm_attention", MNIST1D_MODELS["lstm_attention"][1]))


def _file_bytes(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def _summary(int8: Counter[str], flt: Counter[str]) -> str:
    """'int8: GRU x1, Linear x1; float: none' from counts of layer or op names."""

    def fmt(names: Counter[str]) -> str:
        return ", ".join(f"{n} x{names[n]}" for n in sorted(names)) or "none"

    return f"int8: {fmt(int8)}; float: {fmt(flt)}"


def _kinds(model: nn.Module) -> str:
    """The summary of the module types actually in the model."""
    import torch.ao.nn.quantized.dynamic as nnqd

    int8, flt = Counter[str](), Counter[str]()
    for m in model.modules():
        if isinstance(m, (nnqd.GRU, nnqd.LSTM, nnqd.Linear)):
            int8[type(m).__name__] += 1
        elif isinstance(m, (nn.GRU, nn.LSTM, nn.Linear)):
            flt[type(m).__name__] += 1
    return _summary(int8, flt)


def _onnx_kinds(path: Path) -> str:
    """The same summary for the graph ONNX Runtime runs (after its optimizations)."""
    ops = ort_optimized_ops(path)
    floats = {"LSTM", "GRU", "MatMul", "Gemm", "FusedGemm", "FusedMatMul"}
    return _summary(
        Counter({op: n for op, n in ops.items() if op in INTEGER_OPS}),
        Counter({op: n for op, n in ops.items() if op in floats}),
    )


def _onnx_int8(
    fp32: nn.Module, fp32_onnx: Path, data: Any, tmp: Path, name: str, failed: dict[str, str]
) -> dict[str, Path]:
    """ONNX files of the int8 variants that run in ONNX Runtime: shrink's dynamic path (a GRU stays float: ONNX
    Runtime has no int8 kernel for it), shrink's static path (calibrated on the calibration split), and ONNX
    Runtime's own dynamic quantizer on the fp32 export ``fp32_onnx``. A variant that fails is recorded in ``failed``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def ort_dynamic(path: Path) -> Path:
        quantize_dynamic(str(fp32_onnx), str(path), weight_type=QuantType.QInt8, per_channel=True)
        return path

    builds = {
        "shrink int8_dynamic (ONNX Runtime)": lambda path: shrink.export.onnx(
            shrink.quantize(fp32, Int8Dynamic(selector=Selector(types=("Linear", "LSTM"))), progress=False),
            path,
            data.example_inputs,
        ),
        "shrink int8_static (ONNX Runtime)": lambda path: shrink.export.onnx(
            shrink.quantize(fp32, Int8Static(), calibration=data.calibration, progress=False),
            path,
            data.example_inputs,
        ),
        "ONNX Runtime quantize_dynamic (per-channel)": ort_dynamic,
    }
    out = {}
    for i, (label, build) in enumerate(builds.items()):
        try:
            out[label] = build(tmp / f"{name}-int8-{i}.onnx")
        except Exception as exc:  # a variant that fails is a row saying so
            failed[label] = f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
    return out


def _torch_ao(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates torch.ao quantization in favour of torchao
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {nn.GRU, nn.LSTM, nn.Linear}, dtype=torch.qint8
        )


def recurrent_table() -> Table:
    """One table: for each recurrent model, fp32 and the two dynamic int8 paths."""
    data = mnist1d_data()
    x = torch.cat([b[0] for b in data.test])
    x1, x32 = x[:1], x[:32]
    columns = ["model", "variant", "test acc (%)", "file (bytes)", "b1 ms", "b1 x best float", "b32 ms"]
    t = Table(
        "MNIST-1D recurrent models: int8 in PyTorch and ONNX Runtime vs fp32 "
        "(seed 0, paper protocol, 1,000 test signals)",
        [*columns, "b32 x best float", "layers"],
    )
    tmp = Path(tempfile.mkdtemp(prefix="mnist1d-recurrent-"))
    for name, epochs in RECURRENT:
        fp32 = mnist1d_model(name, seed=0, epochs=epochs, paper_train=True)
        failed: dict[str, str] = {}
        fp32_onnx = tmp / f"{name}.onnx"  # the ONNX Runtime float row's export, which ORT's quantizer reads
        runs = {k: b.run for k, b in float_baselines(fp32, x1, [x32, x1], fp32_onnx, failures=failed).items()}
        variants = {
            "shrink int8_dynamic (torch)": shrink.quantize(fp32, Int8Dynamic(backend="torch"), progress=False),
            "torch.ao quantize_dynamic": _torch_ao(fp32),
        }
        runs |= {k: (lambda x, m=m: m(x)) for k, m in variants.items()}
        onnx_files = _onnx_int8(fp32, fp32_onnx, data, tmp, name, failed)
        runs |= {k: OnnxModel(p, threads=THREADS) for k, p in onnx_files.items()}
        lat = time_together(runs, {1: x1, 32: x32}, rounds=9)
        for label, run in runs.items():
            model = variants.get(label, fp32)
            with torch.inference_mode():
                acc = accuracy(*predict(run, data.test))
            cells = [c for b in (1, 32) for c in (ms_cell(lat[label][b]), f"{speedup(lat, label, b):.2f}x")]
            if label in onnx_files:
                size, kinds = onnx_files[label].stat().st_size, _onnx_kinds(onnx_files[label])
            else:
                size, kinds = _file_bytes(model), _kinds(model) if label in variants else "all float"
            t.add(name, label, acc, size, *cells, kinds)
        for label, error in failed.items():
            t.add(name, label, "-", "-", error, "-", "-", "-", "-")
    t.note = (
        "All rows of a model timed together in interleaved rounds; 'x best float' against the fastest float row "
        "(fp32 eager, compiled, bf16 compiled where native, ONNX Runtime fp32). File: `torch.save(state_dict)` of "
        "the PyTorch model, or the .onnx file ONNX Runtime runs. Dynamic int8 quantizes weights ahead of time and "
        "activations per batch at run time; in PyTorch, shrink's recurrent layers use PyTorch's per-tensor weight "
        "observer (its Linear layers per channel); in ONNX Runtime, LSTM weights are int8 per row. Static int8 "
        "calibrates on the calibration split. 'layers' for ONNX Runtime rows: the ops of the graph it runs."
    )
    return t
