"""Real int8 execution of a per-layer policy on the CPU: ONNX Runtime's own static quantizer writes a QDQ graph
(per-channel int8 weights, uint8 activations) in which only the chosen layers are quantized; the rest stay fp32.

The measured CPU profile times layers through this path, and mixed-precision / search results are measured
through it, so table and measurement use the same kernels.

A layer the policy keeps in fp32 stays fp32 in the session: ONNX Runtime's ``WeightBiasQuantization`` transformer
would otherwise quantize the float weights of a layer whose input is dequantized and whose output is quantized
again (an fp32 layer between two int8 ones) and run it on int8 kernels, so the model running would not be the one
whose accuracy was measured.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx as onnx_lib
import torch
from torch import nn

from shrink.export.onnx import OnnxModel
from shrink.export.onnx import onnx as export_onnx

__all__ = ["export_int8", "int8_session", "int8_sessions", "layer_nodes"]

_COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
KEEP_FLOAT_LAYERS = ("WeightBiasQuantization",)  # ONNX Runtime transformers left out of int8 sessions


def layer_nodes(onnx_path: str | os.PathLike[str], layers: Iterable[str]) -> dict[str, list[str]]:
    """ONNX node names of the Conv/Gemm/MatMul nodes exported from each torch module name."""
    wanted = set(layers)
    out: dict[str, list[str]] = {name: [] for name in wanted}
    for node in onnx_lib.load(str(onnx_path), load_external_data=False).graph.node:
        parts = node.name.split("/")
        if node.op_type in _COMPUTE_OPS and len(parts) >= 2 and parts[-2] in wanted:
            out[parts[-2]].append(node.name)
    return out


class _Reader:
    """ONNX Runtime calibration reader over a list of input arrays."""

    def __init__(self, name: str, arrays: list[np.ndarray]) -> None:
        self.name, self.items = name, iter(arrays)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self.items, None)
        return None if x is None else {self.name: x}


def export_int8(
    model: nn.Module,
    path: str | os.PathLike[str],
    example_inputs: torch.Tensor,
    calibration: list[torch.Tensor],
    int8_layers: Iterable[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
) -> Path:
    """Write ``model`` as a QDQ ONNX graph at ``path`` with ``int8_layers`` (default: all Conv/Linear) quantized
    (``output_names``, ``dynamic_axes``: as :func:`shrink.export.onnx`).

    ``calibration`` is a list of input tensors for activation ranges (min-max).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    path = Path(path)
    fp32_path = path.with_name(path.stem + ".fp32.onnx")
    fp32 = export_onnx(model, fp32_path, example_inputs, output_names=output_names, dynamic_axes=dynamic_axes)
    all_nodes = layer_nodes(
        fp32, [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    )
    chosen = set(all_nodes) if int8_layers is None else set(int8_layers)
    exclude = [node for name, nodes in all_nodes.items() if name not in chosen for node in nodes]
    include = [node for name, nodes in all_nodes.items() if name in chosen for node in nodes]
    if not include:
        os.replace(fp32, path)  # nothing to quantize: the fp32 graph is the answer
        return path
    reader = _Reader("input", [t.detach().numpy().astype(np.float32) for t in calibration])
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # the quantizer logs a pre-processing suggestion on every call
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        quantize_static(
            str(fp32),
            str(tmp),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=exclude,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
        os.replace(tmp, path)
    finally:
        root.setLevel(level)
        tmp.unlink(missing_ok=True)
        fp32.unlink(missing_ok=True)
    return path


def int8_session(
    model: nn.Module,
    directory: str | os.PathLike[str],
    example_inputs: torch.Tensor,
    calibration: list[torch.Tensor],
    int8_layers: Iterable[str] | None = None,
    threads: int = 2,
) -> OnnxModel:
    """Export with :func:`export_int8` and open the graph in ONNX Runtime (``execution`` says what runs int8)."""
    chosen = None if int8_layers is None else sorted(int8_layers)
    path = export_int8(model, Path(directory) / "model.int8.onnx", example_inputs, calibration, chosen)
    what = "all layers" if chosen is None else f"{len(chosen)} layers"
    return OnnxModel(
        path,
        threads=threads,
        execution=f"int8 QDQ, {what} (real, integer kernels)",
        disabled_optimizers=KEEP_FLOAT_LAYERS,
    )


def int8_sessions(
    configs: Sequence[tuple[nn.Module, Iterable[str]]],
    example_inputs: torch.Tensor,
    calibration: list[torch.Tensor],
    threads: int = 2,
) -> list[OnnxModel]:
    """One :func:`int8_session` per ``(model, int8 layer names)``, exported to a temporary directory (the sessions
    keep their graphs in memory)."""
    with tempfile.TemporaryDirectory(prefix="shrink-int8-") as tmp:
        return [
            int8_session(model, f"{tmp}/{i}", example_inputs, calibration, sorted(int8), threads=threads)
            for i, (model, int8) in enumerate(configs)
        ]
