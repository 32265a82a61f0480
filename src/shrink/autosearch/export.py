"""Give a policy-compressed model a real CPU execution path: its ONNX export becomes a QDQ graph in which the layers
at <= 8 bits run on int8 kernels (2/4-bit weights stored on the int8 grid: the CPU has no int4 kernels) and
16/32-bit layers stay fp32. The graph is exported from the float twins of the low-bit layers (their dequantized
weights, no input fake-quant): ONNX Runtime's quantizer chooses the int8 grids and the activation ranges itself."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shrink.data import split_batch
from shrink.hw.ort_int8 import export_int8
from shrink.hw.policy import Policy
from shrink.quant.layers.convert import set_module
from shrink.quant.layers.lowbit import LowBitConv, LowBitLinear

__all__ = ["attach_int8_export", "calibration_tensors", "Int8Export"]


def calibration_tensors(data: Iterable[Any] | None, batches: int = 4) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for i, batch in enumerate(data or []):
        if i >= batches:
            break
        inputs = split_batch(batch)[0]
        if not isinstance(inputs, torch.Tensor):
            return []  # dict / tuple inputs: the int8 export path handles single-tensor models only
        out.append(inputs)
    return out


class Int8Export:
    """``model.shrink_export_onnx``: export ``model`` with the policy's int8 layers quantized."""

    def __init__(self, model: nn.Module, int8_layers: list[str], calibration: list[torch.Tensor]) -> None:
        self.model, self.int8_layers, self.calibration = model, int8_layers, calibration

    def __call__(
        self,
        path: str | os.PathLike[str],
        example_inputs: Any,
        opset: int,
        output_names: Sequence[str] | None = None,
        dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    ) -> Path:
        plain = copy.deepcopy(self.model)
        del plain.shrink_export_onnx  # export the plain graph, then quantize it
        for name, module in list(plain.named_modules()):  # input fake-quant: replaced by the runtime's int8 inputs
            if isinstance(module, (LowBitLinear, LowBitConv)):
                set_module(plain, name, module.to_float())
        return export_int8(plain, path, example_inputs, self.calibration, self.int8_layers, output_names, dynamic_axes)


def attach_int8_export(model: nn.Module, policy: Policy, data: Iterable[Any] | None) -> bool:
    """Attach :class:`Int8Export` to ``model`` (returns False when the inputs are not a single tensor)."""
    calib = calibration_tensors(data)
    if not calib:
        return False
    model.shrink_export_onnx = Int8Export(model, [n for n, c in policy.items() if c.bits <= 8], calib)  # type: ignore
    return True
