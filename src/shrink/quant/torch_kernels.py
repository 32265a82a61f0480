"""Real integer execution in PyTorch as a recipe stage (``torch_kernels``): the current quantized model converted
onto PyTorch's integer kernels and added to the report as a row of its own, as ``onnx_export`` adds ONNX Runtime's.

* int8 Linears / Conv2d (``int8_static``, ``int8_dynamic`` per-token): oneDNN's int8 GEMMs
  (:func:`shrink.quant.to_torch_int8`);
* weight-only Linears (``weight_only``): ``aten._weight_int8pack_mm`` (int8, one scale per row) and
  ``aten._weight_int4pack_mm_for_cpu`` (int4, groups of 32 / 64 / 128 / 256), bf16 activations and scales
  (:mod:`shrink.quant.runtimes.torch_weight_only`); a grid no kernel reads stays as it was, and the report says
  how many. With ``widen_int8`` they run on oneDNN's int8 GEMMs instead, their codes widened to int8 with one
  scale per row and their inputs quantized per token (:mod:`shrink.quant.runtimes.widen`);
* ``compile``: the converted model through Inductor (:func:`shrink.quant.compile_int8`), compiled on the example
  input before it is measured.

The stage's own model (what the next stage starts from, and what ``model.shrink`` stores) is the quantized model
unchanged: the converted one holds prepacked runtime weights, so its size, parameters and MACs in the report are
those of the quantized model (``shrink_runtime_figures``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.counts import count_macs, count_params
from shrink.errors import ConfigError, UnsupportedOpError
from shrink.export.artifact import artifact_bytes
from shrink.quant.layers.modules import QuantConv2d, QuantLinear
from shrink.quant.layers.packed import PackedLinear
from shrink.quant.runtimes.torch_backend import to_torch_int8
from shrink.quant.runtimes.torch_token import compile_int8
from shrink.quant.runtimes.torch_weight_only import to_torch_weight_only
from shrink.quant.runtimes.widen import widen_to_int8

__all__ = ["TorchKernels", "to_torch_kernels"]


@register("torch_kernels", family="export")
class TorchKernels(Config):
    """Run the quantized model on PyTorch's integer kernels (int8 GEMMs, packed int8 / int4 weight-only kernels)
    and measure it as a row of its own; ``compile`` hands it to Inductor first."""

    #: compile the converted model with torch.compile (Inductor, frozen weights, dynamic shapes)
    compile: bool = False
    #: with compile: time Inductor's GEMM candidates (faster code, minutes more on a large model)
    max_autotune: bool = True
    #: weight-only Linears on oneDNN's int8 GEMMs (codes widened to int8 in memory, one scale per row; inputs
    #: quantized per token) instead of the packed-weight kernels, which compute in bf16: faster where the CPU has
    #: int8 dot products (VNNI) but no AMX; the file keeps its packed codes
    widen_int8: bool = False


def to_torch_kernels(
    model: nn.Module, example_inputs: Any = None, widen_int8: bool = False
) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` on PyTorch's integer kernels, and notes on what was converted. A model with no int8 or
    packed weight-only layer is an error. ``widen_int8``: see :attr:`TorchKernels.widen_int8`."""
    kinds = {type(m) for m in model.modules()}
    packed, int8 = PackedLinear in kinds, bool(kinds & {QuantLinear, QuantConv2d})
    if not (packed or int8):
        raise UnsupportedOpError(
            f"torch_kernels: {type(model).__name__} has no int8 or weight-only quantized layer; "
            "list a quantization stage (int8_static, int8_dynamic, weight_only) before it"
        )
    out, notes, widened = model, [], 0
    if packed and widen_int8:
        out, widened = widen_to_int8(out)
        notes.append(f"torch_kernels: {widened} weight-only Linears widened to int8 codes for oneDNN's int8 GEMMs")
        packed, int8 = False, True
    if packed:
        out, converted, left = to_torch_weight_only(out)
        kept = f"; {left} with a grid no kernel reads stay de-quantized in float" if left else ""
        notes.append(f"torch_kernels: {converted} weight-only Linears on PyTorch's packed-weight kernels{kept}")
        label = f"weight-only (real, PyTorch packed int8 / int4 kernels, bf16 activations{kept})"
        setattr(out, "shrink_execution", label)  # noqa: B010
    if int8:
        out = to_torch_int8(out, example_inputs=example_inputs)
    if widened:
        label = f"{widened} weight-only Linears widened to int8 in memory (one scale per row); {out.shrink_execution}"
        setattr(out, "shrink_execution", label)  # noqa: B010
    params, nonzero = count_params(model)
    macs = count_macs(model, example_inputs) if example_inputs is not None else None
    figures = {"size_bytes": artifact_bytes(model), "params": params, "nonzero_params": nonzero, "macs": macs}
    setattr(out, "shrink_runtime_figures", figures)  # noqa: B010
    return out, notes


@implements(TorchKernels)
def torch_kernels_stage(model: nn.Module, config: TorchKernels, ctx: Context) -> nn.Module:
    if ctx.example_inputs is None:
        raise ConfigError("torch_kernels: needs example inputs")
    real, notes = to_torch_kernels(model, ctx.example_inputs, widen_int8=config.widen_int8)
    execution = getattr(real, "shrink_execution", "integer kernels")
    if config.compile:
        figures = real.shrink_runtime_figures
        real = compile_int8(real, warmup=[ctx.example_inputs], max_autotune=config.max_autotune)
        real.shrink_runtime_figures = figures
        notes.append(f"torch_kernels: compiled in {real.compile_seconds:.1f} s")
        execution += ", compiled"
    ctx.notes.extend(notes)
    ctx.extra_models[f"torch ({execution})"] = real
    return model
