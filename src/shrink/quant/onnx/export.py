"""Export of a shrink-quantized model to an integer ONNX graph and a check of what ONNX Runtime really runs.

``attach_export(model, execution)`` gives the model the ``shrink_export_onnx`` hook that
:func:`shrink.export.onnx` calls; the quantized layers emit QDQ / integer nodes themselves.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shrink.export.onnx import trace_to_onnx

__all__ = ["export_quantized_onnx", "attach_export", "ort_optimized_ops", "INTEGER_OPS", "QuantizedExport"]

#: ops of ONNX Runtime's optimized graph that run integer arithmetic
INTEGER_OPS = frozenset(
    {
        "QLinearConv",
        "QLinearMatMul",
        "MatMulInteger",
        "ConvInteger",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "QGemm",
        "QLinearAdd",
        "QAttention",
        "DynamicQuantizeLSTM",
        "MatMulNBits",
        "QLinearGlobalAveragePool",
    }
)


def export_quantized_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    example_inputs: Any,
    opset: int = 17,
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
) -> Path:
    """Trace ``model`` (containing shrink quantized layers) to ONNX at ``path`` with a dynamic batch axis
    (``output_names``, ``dynamic_axes``: as :func:`shrink.export.onnx`)."""
    with warnings.catch_warnings():
        # qparams are read as Python numbers on purpose: they are constants of the exported graph
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        return trace_to_onnx(
            model, path, example_inputs, opset=max(opset, 13), output_names=output_names, dynamic_axes=dynamic_axes
        )


class QuantizedExport:
    """Picklable / deep-copyable ``shrink_export_onnx`` hook bound to one model."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(
        self,
        path: str | os.PathLike[str],
        example_inputs: Any,
        opset: int = 17,
        output_names: Sequence[str] | None = None,
        dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    ) -> Path:
        return export_quantized_onnx(self.model, path, example_inputs, opset, output_names, dynamic_axes)


def attach_export(
    model: nn.Module, execution: str = "fake-quant (simulated)", onnx_execution: str = "int8 (real, integer kernels)"
) -> nn.Module:
    """Label ``model`` as simulated in PyTorch and give it the integer ONNX export hook."""
    setattr(model, "shrink_execution", execution)  # noqa: B010  (nn.Module types attributes as Tensor | Module)
    setattr(model, "shrink_onnx_execution", onnx_execution)  # noqa: B010  (nn.Module types attributes as Tensor | Module)
    setattr(model, "shrink_export_onnx", QuantizedExport(model))  # noqa: B010  (nn.Module types attributes as Tensor | Module)
    return model


def ort_optimized_ops(
    path: str | os.PathLike[str], threads: int = 1, disabled_optimizers: Sequence[str] = ()
) -> Counter[str]:
    """Op types of the graph ONNX Runtime actually executes after its optimizations (QDQ fusion etc.), with the
    graph transformers named in ``disabled_optimizers`` left out."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(Path(d) / "opt.onnx")
        ort.InferenceSession(
            str(path), opts, providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled_optimizers)
        )
        graph = onnx.load(opts.optimized_model_filepath).graph
        return Counter(n.op_type for n in graph.node)
