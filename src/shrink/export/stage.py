"""ONNX export as a recipe stage: writes ``model.onnx`` and adds its ONNX Runtime session to the report, with the
kernel that computes each layer (:mod:`shrink.export.kernels`)."""

from __future__ import annotations

from pathlib import Path

import pydantic
from torch import nn

from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.counts import count_macs
from shrink.errors import ConfigError
from shrink.export.kernels import layer_kernels, weight_layers
from shrink.export.onnx import DEFAULT_OPSET, OnnxModel, onnx

__all__ = ["OnnxExport"]


@register("onnx_export", family="export")
class OnnxExport(Config):
    """Export the current model to ONNX and measure it in ONNX Runtime."""

    filename: str = "model.onnx"
    opset: int = pydantic.Field(DEFAULT_OPSET, ge=13, le=21)
    threads: int = pydantic.Field(2, ge=1)
    #: which axes of the graph's inputs / outputs vary, e.g. ``{input: {0: sequence, 1: batch}, output: {0: batch}}``
    #: for a time-major LSTM (None: axis 0 is the batch; a dict's tensors also axis 1 the sequence)
    dynamic_axes: dict[str, dict[int, str]] | None = None


@implements(OnnxExport)
def export_stage(model: nn.Module, config: OnnxExport, ctx: Context) -> nn.Module:
    if ctx.example_inputs is None:
        raise ConfigError("onnx_export: needs example inputs")
    out = Path(ctx.out_dir) if ctx.out_dir is not None else Path(".")
    path = onnx(model, out / config.filename, ctx.example_inputs, opset=config.opset, dynamic_axes=config.dynamic_axes)
    session = OnnxModel(  # execution: the quantizer's label, else read from the graph (never "fp32" for int8)
        path,
        threads=config.threads,
        execution=getattr(model, "shrink_onnx_execution", None),
        macs=count_macs(model, ctx.example_inputs),
    )
    session.kernels = layer_kernels(path, weight_layers(model))
    ctx.extra_models[f"onnxruntime ({session.execution})"] = session
    return model
