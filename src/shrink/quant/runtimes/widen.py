"""Weight-only Linears (:class:`PackedLinear`: int4 or int8 codes, one scale per group of inputs) re-expressed as
per-token int8 Linears, so that they run on oneDNN's int8 GEMMs (:func:`shrink.quant.to_torch_int8`) instead of
the packed-weight kernels.

The file keeps the packed codes (4 bits each for int4); only the converted copy in memory holds 8-bit codes. An
int8 GEMM takes one weight scale per output row, while a packed row has one per group, so each code is put on its
row's int8 grid::

    s_row = max_k |q_k s_g(k)| / 127          c_k = round(q_k s_g(k) / s_row)

(the row's largest weight lands on ±127). The widening moves each weight by at most ``s_row / 2``, where int4
rounding itself left up to ``s_g / 2``: with alike group scales ``s_row`` is about ``s_g / 18`` (``max|w| / 127``
against ``max|w| / 7``), so the weights stay those of the packed model to within a small fraction of its own
rounding. On a CPU without VNNI the int8 kernels take these codes at 7 bits
(:func:`~shrink.quant.runtimes.torch_token.kernel_codes`), about ``s_g / 9`` a step.

What changes is the arithmetic around them: the activations are quantized per token to uint8 (256 steps from each
row's minimum to its maximum, as ``Int8Dynamic(granularity="token")``) and multiplied in integers on the CPU's int8
dot products (VNNI, AMX), where the packed int4 kernels compute in bf16 (fast only where the CPU has AMX). The
price is memory at run time: a byte per weight instead of half a byte.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from shrink.errors import UnsupportedOpError
from shrink.quant.layers.convert import set_module
from shrink.quant.layers.modules import QuantLinear
from shrink.quant.layers.packed import PackedLinear
from shrink.quant.numerics.qparams import qparams_for_tensor

__all__ = ["widen_to_int8", "widened_layer"]


@torch.no_grad()
def widened_layer(layer: PackedLinear) -> QuantLinear:
    """``layer`` as a per-token int8 :class:`QuantLinear`: its codes on one int8 grid per output row (see the
    module's docstring), its bias, its AWQ input scaling as the input smoothing."""
    p = layer.packed
    weight = p.dequantize()  # the packed model's weights exactly: (codes - zeros) x fp16 group scales
    smooth = layer.input_scale is not None
    out = QuantLinear(layer.in_features, layer.out_features, layer.bias is not None, 8, "dynamic_token", smooth=smooth)
    # symmetric int8 per row on [-127, 127]: each row's largest weight on the grid's end
    out.set_weight(weight, qparams_for_tensor(weight, 8, symmetric=True, axis=0, narrow_range=True))
    if layer.bias is not None:
        assert out.bias is not None  # built with a bias just above
        out.bias.data.copy_(layer.bias.detach().float())
    if smooth:
        assert layer.input_scale is not None and out.input_smooth is not None
        out.input_smooth.copy_(layer.input_scale.float())
    return out.to(p.scales.device)


def widen_to_int8(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``model`` whose :class:`PackedLinear` layers are per-token int8 :class:`QuantLinear` layers
    (:func:`widened_layer`), and how many there were. The copy simulates in float, to float rounding, what
    :func:`shrink.quant.to_torch_int8` then runs on integer kernels; ``model`` is left as it is. A model without
    packed Linears is an error."""
    out = copy.deepcopy(model)
    for attr in ("shrink_export_onnx", "shrink_onnx_execution", "shrink_execution"):
        out.__dict__.pop(attr, None)
    layers = {n: m for n, m in out.named_modules() if isinstance(m, PackedLinear)}
    if not layers:
        raise UnsupportedOpError(f"{type(model).__name__}: no weight-only (packed) Linear to widen to int8")
    for name, layer in layers.items():
        set_module(out, name, widened_layer(layer))
    return out, len(layers)
