"""Layers for quantization-aware training: conv / linear with an LSQ input quantizer, an LSQ per-channel weight
quantizer, and the following BatchNorm and ReLU folded in.

BatchNorm folding during QAT (Jacob et al. 2018; Krishnamoorthi 2018, as PyTorch's ``ConvBn2d``): the weight
quantizer always sees the folded weight ``W · γ/σ_running``, which is what the integer model will store. While BN
statistics still update, the convolution's output is divided back by ``γ/σ_running`` and normalized with batch
statistics, so training stays stable; once frozen (:meth:`QatConv2d.freeze_bn`, and always in eval mode) the layer
computes exactly the folded form ``conv(x, q(W_fold)) + b_fold`` that conversion produces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shrink.quant.algorithms.fold import bn_running_stats
from shrink.quant.algorithms.lsq import LsqQuantizer

__all__ = ["QatConv2d", "QatLinear", "QatLayer"]


class _QatBase(nn.Module):
    """Shared parts: the wrapped float layer, optional BN, fused ReLU, input and weight quantizers."""

    layer: nn.Conv2d | nn.Linear
    bn: nn.BatchNorm2d | nn.BatchNorm1d | None
    bn_frozen: torch.Tensor

    def __init__(
        self,
        layer: nn.Conv2d | nn.Linear,
        bn: nn.BatchNorm2d | nn.BatchNorm1d | None,
        relu: bool,
        weight_bits: int,
        act_bits: int,
        act_signed: bool,
    ) -> None:
        super().__init__()
        self.layer, self.bn, self.relu = layer, bn, relu
        self.register_buffer("bn_frozen", torch.tensor(False))  # a buffer, so a resumed run keeps it
        self.input_quant = LsqQuantizer(act_bits, signed=act_signed, batch_sliced=True)
        self.weight_quant = LsqQuantizer(weight_bits, signed=True, channel_axis=0, num_channels=layer.weight.shape[0])

    @property
    def weight(self) -> torch.Tensor:
        """The wrapped layer's float weight (for code that reads a layer's ``.weight``, e.g. its dtype)."""
        return self.layer.weight

    def freeze_bn(self) -> None:
        """Stop updating BN statistics and train the exact folded form from now on."""
        self.bn_frozen.fill_(True)

    def _bn_factor(self) -> torch.Tensor | None:
        if self.bn is None:
            return None
        _, running_var = bn_running_stats(self.bn)
        gamma = self.bn.weight if self.bn.affine else torch.ones_like(running_var)
        return gamma / torch.sqrt(running_var + self.bn.eps)

    def folded_weight(self) -> torch.Tensor:
        """The float weight with BN (running statistics) folded in: what the weight quantizer quantizes."""
        w = self.layer.weight
        factor = self._bn_factor()
        if factor is None:
            return w
        return w * factor.reshape([-1] + [1] * (w.dim() - 1))

    def folded_bias(self) -> torch.Tensor | None:
        """The bias of the folded form, ``(b - μ_running) · γ/σ_running + β``."""
        bias = self.layer.bias
        if self.bn is None:
            return bias
        factor = self._bn_factor()
        assert factor is not None
        beta = self.bn.bias if self.bn.affine else torch.zeros_like(factor)
        b = bias if bias is not None else torch.zeros_like(factor)
        running_mean, _ = bn_running_stats(self.bn)
        return (b - running_mean) * factor + beta

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quant(x)
        w_q = self.weight_quant(self.folded_weight())
        if self.bn is None or bool(self.bn_frozen) or not self.training:
            y = self._op(x, w_q, self.folded_bias())
        else:
            factor = self._bn_factor()
            assert factor is not None
            shape = [1, -1] + [1] * (x.dim() - 2)
            y = self._op(x, w_q, None) / factor.reshape(shape)
            if self.layer.bias is not None:
                y = y + self.layer.bias.reshape(shape)
            y = self.bn(y)
        return F.relu(y) if self.relu else y


class QatConv2d(_QatBase):
    """Conv2d (+ BatchNorm2d folded) (+ ReLU) with LSQ fake quantization of input and weight."""

    layer: nn.Conv2d

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        conv = self.layer
        return F.conv2d(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)


class QatLinear(_QatBase):
    """Linear (+ BatchNorm1d folded) (+ ReLU) with LSQ fake quantization of input and weight."""

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, w, b)


QatLayer = QatConv2d | QatLinear
