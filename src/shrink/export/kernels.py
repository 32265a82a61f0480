"""Which ONNX Runtime kernel computes each layer of an exported model.

ONNX Runtime rewrites the graph before it runs it: QuantizeLinear / DequantizeLinear pairs around a Conv become one
``QLinearConv``, a MatMul and its Add one ``Gemm``, and so on. :func:`layer_kernels` reads the graph after those
rewrites (optimization level "extended": fusions, but not the hardware-specific layout rewrite, so node names still
carry the module path the exporter gave them, ``/features/features.3/Conv``) and reports, for each layer, the compute
op that runs it and the arithmetic that op does. A mixed-precision model thus shows which layers run int8 kernels
and which stayed float.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from torch import nn

__all__ = ["KERNEL_ARITHMETIC", "layer_kernels", "weight_layers", "kernel_summary"]

#: compute ops of ONNX Runtime's CPU provider -> the arithmetic they run
KERNEL_ARITHMETIC: dict[str, str] = {
    **dict.fromkeys(("MatMulNBits", "GatherBlockQuantized"), "int4"),
    **dict.fromkeys(
        (
            "QLinearConv",
            "QLinearMatMul",
            "QGemm",
            "MatMulInteger",
            "ConvInteger",
            "DynamicQuantizeMatMul",
            "MatMulIntegerToFloat",
            "QAttention",
            "DynamicQuantizeLSTM",
        ),
        "int8",
    ),
    **dict.fromkeys(
        ("Conv", "FusedConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm", "FusedGemm", "Gather", "LSTM", "GRU"),
        "float",
    ),
}
#: which op names the kernel when a layer's scope holds several (integer kernels first: the float Gemm beside a
#: per-token MatMulIntegerToFloat only adds the zero-point term)
_PRECEDENCE = ("int4", "int8", "float")


def weight_layers(model: nn.Module) -> list[str]:
    """Names of the modules that hold a layer's weights: a parameter or buffer of two or more dimensions of their own,
    or a packed weight child (``packed``); modules inside such a layer are not listed again."""
    out: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(f"{o}.") for o in out):
            continue
        own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        if any(t.dim() >= 2 for t in own) or isinstance(getattr(module, "packed", None), nn.Module):
            out.append(name)
    return out


def _scope(layer: str) -> str:
    """The name prefix the TorchScript exporter gives a module's nodes: ``a.b`` -> ``/a/a.b/``."""
    parts = layer.split(".")
    return "/" + "/".join(".".join(parts[: i + 1]) for i in range(len(parts))) + "/"


def _optimized_nodes(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(Path(d) / "optimized.onnx")
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath).graph
    return [(n.name.removeprefix("fused "), n.op_type) for n in graph.node]


def layer_kernels(path: str | os.PathLike[str], layers: Iterable[str]) -> dict[str, str]:
    """``{layer: "QLinearConv (int8)"}`` for each module name in ``layers``: the compute op ONNX Runtime runs for it
    and that op's arithmetic; ``"-"`` when no compute node carries the layer's name (folded into a neighbour)."""
    nodes = _optimized_nodes(path)
    out: dict[str, str] = {}
    for layer in layers:
        scope = _scope(layer)
        ops = [op for name, op in nodes if name.startswith(scope) and op in KERNEL_ARITHMETIC]
        # a Gather beside another compute op reads a shape (an LSTM's initial state): it names an embedding only
        ranked = sorted(ops, key=lambda op: (_PRECEDENCE.index(KERNEL_ARITHMETIC[op]), op == "Gather"))
        out[layer] = f"{ranked[0]} ({KERNEL_ARITHMETIC[ranked[0]]})" if ranked else "-"
    return out


def kernel_summary(kernels: dict[str, str]) -> str:
    """One line: each kernel with the layers it runs, e.g. ``QLinearConv (int8): conv2, conv3; Conv (float): conv1``."""
    by_kernel: dict[str, list[str]] = {}
    for layer, kernel in kernels.items():
        by_kernel.setdefault(kernel, []).append(layer)
    return "; ".join(f"{kernel}: {', '.join(layers)}" for kernel, layers in by_kernel.items())
