"""Quantized Linear / Conv2d layers: int8 weight storage with per-channel scales, and activation quantization that is
static (calibrated qparams), dynamic (per-batch u8 range, as ONNX ``DynamicQuantizeLinear``) or absent.

In eager PyTorch they simulate the integer arithmetic exactly (fake-quant, float math); exported to ONNX they
become real integer graphs (see :mod:`shrink.quant.onnx.ops`). The weight codes live in an int8 buffer in memory;
:func:`shrink.save` stores them at ``weight_bits`` bits each (bit-packed, see :mod:`shrink.export.codes`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from shrink.export.artifact import register_layer
from shrink.quant.numerics.qparams import QParams, compute_qparams, dynamic_fake_quant, qrange
from shrink.quant.onnx import ops as onnx_ops

__all__ = ["QuantLinear", "QuantConv2d", "ActMode"]

ActMode = Literal["static", "dynamic", "dynamic_token", "none"]


class _QuantBase(nn.Module):
    """Shared state: int weight codes, per-output-channel scales, optional input / output activation qparams."""

    weight_int: torch.Tensor
    weight_scale: torch.Tensor
    input_qparams: torch.Tensor
    output_qparams: torch.Tensor
    bias: nn.Parameter | None

    def _init_quant(
        self, weight_shape: tuple[int, ...], bias: bool, weight_bits: int, act_mode: ActMode, act_bits: int, relu: bool
    ) -> None:
        self.weight_bits, self.act_mode, self.act_bits, self.relu = weight_bits, act_mode, act_bits, relu
        self.register_buffer("weight_int", torch.zeros(weight_shape, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(weight_shape[0]))
        self.bias = nn.Parameter(torch.zeros(weight_shape[0])) if bias else None
        # activation grids: [scale, zero_point] pairs, unsigned (asymmetric u8 as ONNX Runtime prefers)
        self.register_buffer("input_qparams", torch.tensor([1.0, 0.0]))
        self.register_buffer("output_qparams", torch.tensor([1.0, 0.0]))
        self.quantize_output = False
        #: ONNX export stores weights as uint8 + 128 (CPUs without VNNI saturate u8 x s8 products)
        self.onnx_u8_weights = False

    def set_weight(self, weight: torch.Tensor, qp: QParams) -> None:
        from shrink.quant.numerics.qparams import quantize

        self.weight_int.copy_(quantize(weight, qp))
        self.weight_scale.copy_(qp.scale.reshape(-1))

    def set_input_qparams(self, qp: QParams) -> None:
        self.input_qparams.copy_(torch.tensor([float(qp.scale), float(qp.zero_point)]))

    def set_output_qparams(self, qp: QParams) -> None:
        self.output_qparams.copy_(torch.tensor([float(qp.scale), float(qp.zero_point)]))
        self.quantize_output = True

    def dequantized_weight(self) -> torch.Tensor:
        shape = [-1] + [1] * (self.weight_int.dim() - 1)
        return self.weight_int.float() * self.weight_scale.reshape(shape)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized fp32 weight (read-only; for code that reads a layer's ``.weight``, e.g. its dtype)."""
        return self.dequantized_weight()

    def _act(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        lo, hi = qrange(self.act_bits, False)
        return onnx_ops.qdq(x, float(params[0]), int(params[1]), lo, hi, False)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        smooth = getattr(self, "input_smooth", None)
        if smooth is not None:  # SmoothQuant: x / s, with s folded into the weight
            x = x * smooth
        if self.act_mode == "static":
            return self._act(x, self.input_qparams)
        if self.act_mode in ("dynamic", "dynamic_token") and not torch.onnx.is_in_onnx_export():
            return dynamic_fake_quant(x, per_token=self.act_mode == "dynamic_token")
        return x

    def _output(self, y: torch.Tensor) -> torch.Tensor:
        if self.relu:
            y = F.relu(y)
        if self.quantize_output and self.act_mode == "static":
            y = self._act(y, self.output_qparams)
        return y

    def shrink_code_bits(self) -> dict[str, int]:
        """The file stores ``weight_int`` at ``weight_bits`` bits per code."""
        return {"weight_int": self.weight_bits}

    def shrink_param_count(self) -> tuple[int, int]:
        n = self.weight_int.numel() + (self.bias.numel() if self.bias is not None else 0)
        nz = int(torch.count_nonzero(self.weight_int)) + (
            int(torch.count_nonzero(self.bias)) if self.bias is not None else 0
        )
        return n, nz


@register_layer
class QuantLinear(_QuantBase):
    """Linear with int8 per-output-channel symmetric weights (``weight_bits`` ≤ 8 values) and quantized inputs."""

    input_smooth: torch.Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        weight_bits: int = 8,
        act_mode: ActMode = "static",
        act_bits: int = 8,
        relu: bool = False,
        smooth: bool = False,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_quant((out_features, in_features), bias, weight_bits, act_mode, act_bits, relu)
        self.register_buffer("input_smooth", torch.ones(in_features) if smooth else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._input(x)
        if torch.onnx.is_in_onnx_export():
            codes = onnx_ops.weight_codes(self.weight_int, self.onnx_u8_weights).t().contiguous()
            if self.act_mode == "dynamic_token":
                # through numpy, so the column sums are a constant of the graph, not a traced fp32 weight copy
                colsum = torch.from_numpy((self.weight_int.float().sum(dim=1) * self.weight_scale)[None].numpy())
                y = onnx_ops.TokenQLinear.apply(x, codes, self.weight_scale, self.bias, colsum, self.onnx_u8_weights)
            else:
                fn = onnx_ops.DynamicQLinear if self.act_mode == "dynamic" else onnx_ops.StaticQLinear
                y = fn.apply(x, codes, self.weight_scale, self.bias, self.onnx_u8_weights)
        else:
            y = F.linear(x, self.dequantized_weight(), self.bias)
        return self._output(y)

    def shrink_manifest(self) -> dict:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
            "weight_bits": self.weight_bits,
            "act_mode": self.act_mode,
            "act_bits": self.act_bits,
            "relu": self.relu,
            "smooth": self.input_smooth is not None,
        }

    @classmethod
    def shrink_from_manifest(cls, args: dict) -> QuantLinear:
        return cls(**args)


@register_layer
class QuantConv2d(_QuantBase):
    """Conv2d with int8 per-output-channel symmetric weights and static or no activation quantization."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
        groups: int,
        bias: bool = True,
        weight_bits: int = 8,
        act_mode: ActMode = "static",
        act_bits: int = 8,
        relu: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = tuple(kernel_size), tuple(stride)
        self.padding, self.dilation = tuple(padding), tuple(dilation)
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self._init_quant(shape, bias, weight_bits, act_mode, act_bits, relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._input(x)
        if torch.onnx.is_in_onnx_export():
            codes = onnx_ops.weight_codes(self.weight_int, self.onnx_u8_weights)
            y = onnx_ops.StaticQConv.apply(
                x,
                codes,
                self.weight_scale,
                self.bias,
                self.stride,
                self.padding,
                self.dilation,
                self.groups,
                self.onnx_u8_weights,
            )
        else:
            y = F.conv2d(x, self.dequantized_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)
        return self._output(y)

    def shrink_manifest(self) -> dict:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
            "bias": self.bias is not None,
            "weight_bits": self.weight_bits,
            "act_mode": self.act_mode,
            "act_bits": self.act_bits,
            "relu": self.relu,
        }

    @classmethod
    def shrink_from_manifest(cls, args: dict) -> QuantConv2d:
        return cls(**args)


def act_qparams_u8(lo: torch.Tensor, hi: torch.Tensor, bits: int = 8) -> QParams:
    """Asymmetric unsigned activation grid (the layout ONNX Runtime's u8s8 kernels want)."""
    return compute_qparams(lo, hi, bits, symmetric=False, signed=False)


__all__.append("act_qparams_u8")
