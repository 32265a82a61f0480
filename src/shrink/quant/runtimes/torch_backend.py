"""Run a shrink quantized model on PyTorch's int8 CPU kernels with shrink's own scales and zero points.

* Each :class:`QuantConv2d` / :class:`QuantLinear` with static input and output grids becomes a real int8 layer
  (``torch.ao.nn.quantized``, x86 / fbgemm / onednn engine) between a ``quantize_per_tensor`` and a ``dequantize``.
* Each :class:`QuantLinear` with per-token activations becomes a :class:`TokenInt8Linear` (uint8 rows x int8
  weights on oneDNN's int8 linear, see :mod:`shrink.quant.runtimes.torch_token`).

Everything else stays float. Other layers (no output grid, per-batch dynamic inputs) cannot run on these kernels and
raise :class:`UnsupportedOpError` naming them.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from shrink.errors import UnsupportedOpError
from shrink.quant.layers.convert import set_module, torch_int8_saturates
from shrink.quant.layers.modules import QuantConv2d, QuantLinear
from shrink.quant.runtimes.torch_token import TokenInt8Linear, kernel_codes, merge_shared_inputs

__all__ = ["TorchInt8Layer", "to_torch_int8", "on_kernel_codes"]


class TorchInt8Layer(nn.Module):
    """float in → quantize (shrink's input grid) → PyTorch int8 conv / linear (+ReLU) → dequantize → float out."""

    def __init__(self, qmod: nn.Module, in_scale: float, in_zp: int) -> None:
        super().__init__()
        self.qmod, self.in_scale, self.in_zp = qmod, in_scale, in_zp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = torch.quantize_per_tensor(x, self.in_scale, self.in_zp, torch.quint8)
        return self.qmod(xq).dequantize()


def _weight(layer: QuantConv2d | QuantLinear) -> torch.Tensor:
    codes, scale = kernel_codes(layer.weight_int, layer.weight_scale)
    return torch._make_per_channel_quantized_tensor(codes, scale.double(), torch.zeros_like(scale).long(), 0)


@torch.no_grad()
def on_kernel_codes(model: nn.Module) -> nn.Module:
    """A copy of the simulated quantized ``model`` (or layer) whose int8 weight codes and scales are those PyTorch's
    int8 kernels take on this CPU (:func:`~shrink.quant.runtimes.torch_token.kernel_codes`): the float model of
    what :func:`to_torch_int8`'s result computes. The same as ``model`` on CPUs with VNNI / AMX."""
    out = copy.deepcopy(model)
    for layer in out.modules():
        if isinstance(layer, (QuantConv2d, QuantLinear)):
            codes, scale = kernel_codes(layer.weight_int, layer.weight_scale)
            layer.weight_int.copy_(codes)
            layer.weight_scale.copy_(scale)
    return out


def _convert(name: str, layer: QuantConv2d | QuantLinear) -> nn.Module:
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq

    if isinstance(layer, QuantLinear) and layer.act_mode == "dynamic_token":
        return TokenInt8Linear(layer, name)
    if layer.act_mode != "static" or not layer.quantize_output or getattr(layer, "input_smooth", None) is not None:
        raise UnsupportedOpError(
            f"{name}: PyTorch's int8 kernels need static input and output grids and no smoothing (use "
            "Int8Static(quantize_outputs=True) without a smooth_quant stage), or per-token activations "
            "(Int8Dynamic(granularity='token'))"
        )
    out_scale, out_zp = float(layer.output_qparams[0]), int(layer.output_qparams[1])
    if isinstance(layer, QuantConv2d):
        conv_cls = nniq.ConvReLU2d if layer.relu else nnq.Conv2d
        q: nnq.Conv2d | nnq.Linear = conv_cls(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups,
            layer.bias is not None,
        )
    else:
        linear_cls = nniq.LinearReLU if layer.relu else nnq.Linear
        q = linear_cls(layer.in_features, layer.out_features, layer.bias is not None)
    bias = layer.bias.detach().float() if layer.bias is not None else None
    q.set_weight_bias(_weight(layer), bias)
    q.scale, q.zero_point = out_scale, out_zp
    return TorchInt8Layer(q, float(layer.input_qparams[0]), int(layer.input_qparams[1]))


def to_torch_int8(model: nn.Module, engine: str = "x86", example_inputs: Any = None) -> nn.Module:
    """A copy of a shrink ``int8_static`` model whose quantized layers run PyTorch's int8 kernels (real).

    ``example_inputs``: one batch of model inputs; per-token Linears found reading the same input tensor on it (an
    attention block's query / key / value) are merged into one int8 GEMM (:func:`merge_shared_inputs`).

    The result is a runtime object holding oneDNN's prepacked (opaque) weights: save and export the quantized model
    itself (``shrink.save``, ``shrink.export.onnx``) and convert it again where it runs."""
    torch.backends.quantized.engine = engine
    out = copy.deepcopy(model)
    for attr in ("shrink_export_onnx", "shrink_onnx_execution"):
        out.__dict__.pop(attr, None)
    layers = {n: m for n, m in out.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))}
    if not layers:
        raise UnsupportedOpError(f"{type(model).__name__}: no shrink quantized layer to convert")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates quantized tensors in favour of torchao
        for name, layer in layers.items():
            set_module(out, name, _convert(name, layer))
    token = sum(isinstance(m, TokenInt8Linear) for m in out.modules())
    merged = merge_shared_inputs(out, example_inputs) if example_inputs is not None else 0
    kernels = f"PyTorch {engine} quantized kernels" if token < len(layers) else "PyTorch oneDNN int8 kernels"
    per_token = f", {token} per-token Linear" if token else ""
    per_token += f", {merged} groups reading one input merged into one GEMM each" if merged else ""
    if torch_int8_saturates():
        per_token += ", 7-bit weight codes (this CPU sums u8 x s8 product pairs in 16 bits: no VNNI)"
    setattr(out, "shrink_execution", f"int8 (real, {kernels}{per_token})")  # noqa: B010  (nn.Module types attributes as Tensor | Module)
    return out
