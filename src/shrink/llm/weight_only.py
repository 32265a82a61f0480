"""Weight-only int8 / int4 Linears for LLM decoding on PyTorch's CPU integer-weight kernels.

Decoding at batch 1 is memory-bound: every token reads every weight once. Storing weights as int8 (per output
channel scales) or int4 (symmetric, one scale per ``group_size`` inputs) cuts the bytes read 4x / 8x, and the
kernels ``torch.ops.aten._weight_int8pack_mm`` / ``_weight_int4pack_mm_for_cpu`` multiply by the packed codes
directly (they de-quantize in registers, not into a float copy of the weight). Activations enter the kernels in
bfloat16: the float32 variants of these kernels are reference loops, many times slower.

Codes come from round-to-nearest or from GPTQ (column-wise error feedback under the layer's input second moments).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

from shrink.errors import ConfigError, DataError
from shrink.quant.algorithms.gptq import input_hessians
from shrink.quant.algorithms.group_rounding import gptq_group_codes, rtn_codes

__all__ = ["Int8WeightLinear", "Int4WeightLinear", "rtn_codes", "gptq_group_codes", "quantize_weight_only"]

ACT_DTYPE = torch.bfloat16


class _PackedLinear(nn.Module):
    bias: torch.Tensor | None

    def __init__(self, in_features: int, out_features: int, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise DataError(f"{type(self).__name__}: input {tuple(x.shape)}, expected (..., {self.in_features})")
        y = self._matmul(x.reshape(-1, self.in_features).to(ACT_DTYPE)).to(x.dtype)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class Int8WeightLinear(_PackedLinear):
    """int8 weight codes [out, in] with one scale per output channel, on ``aten._weight_int8pack_mm``."""

    weight_int8: torch.Tensor
    scales: torch.Tensor

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__(codes.shape[1], codes.shape[0], bias)
        self.register_buffer("weight_int8", codes.to(torch.int8).contiguous())
        self.register_buffer("scales", scales.reshape(-1).to(ACT_DTYPE).contiguous())

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x, self.weight_int8, self.scales)

    def dequantize(self) -> torch.Tensor:
        return self.weight_int8.float() * self.scales.float()[:, None]


class Int4WeightLinear(_PackedLinear):
    """int4 weight codes packed two per byte with one scale per ``group_size`` inputs, on
    ``aten._weight_int4pack_mm_for_cpu`` (codes stored offset by 8, zero term 0: a symmetric grid)."""

    weight_int4: torch.Tensor
    scales_zeros: torch.Tensor

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, group_size: int, bias: torch.Tensor | None = None):
        super().__init__(codes.shape[1], codes.shape[0], bias)
        if group_size not in (32, 64, 128, 256) or self.in_features % group_size:
            raise ConfigError(f"int4: group_size {group_size} must be 32/64/128/256 and divide {self.in_features}")
        self.group_size = group_size
        unsigned = (codes.to(torch.int32) + 8).contiguous()
        self.register_buffer("weight_int4", torch.ops.aten._convert_weight_to_int4pack_for_cpu(unsigned, 1))
        sz = torch.stack([scales.float(), torch.zeros_like(scales.float())], -1)  # [out, groups, 2]
        self.register_buffer("scales_zeros", sz.transpose(0, 1).contiguous().to(ACT_DTYPE))

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.weight_int4, self.group_size, self.scales_zeros)

    def dequantize(self) -> torch.Tensor:
        eye = torch.eye(self.in_features, dtype=ACT_DTYPE)
        return self._matmul(eye).float().T.contiguous()


def _linears(model: nn.Module, include_lm_head: bool) -> dict[str, nn.Linear]:
    found = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    if not include_lm_head:
        found.pop("lm_head", None)
    if not found:
        raise ConfigError("quantize_weight_only: the model has no nn.Linear layer")
    return found


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


@torch.no_grad()
def quantize_weight_only(
    model: nn.Module,
    bits: Literal[4, 8],
    group_size: int = 64,
    method: Literal["rtn", "gptq"] = "rtn",
    calibration: Iterable[torch.Tensor] | None = None,
    include_lm_head: bool = True,
) -> nn.Module:
    """A copy of ``model`` whose Linears (and untied ``lm_head``) run as int8 (per-channel) or int4 (symmetric,
    ``group_size`` inputs per scale) weight-only layers on PyTorch's packed-weight kernels. The input is unchanged."""
    if bits not in (4, 8):
        raise ConfigError(f"quantize_weight_only: bits must be 4 or 8, got {bits}")
    if method == "gptq" and calibration is None:
        raise ConfigError("quantize_weight_only: method='gptq' needs calibration token windows")
    out = copy.deepcopy(model).eval()
    layers = _linears(out, include_lm_head)
    windows = [{"input_ids": ids.reshape(1, -1), "use_cache": False} for ids in calibration or []]
    hessians = input_hessians(out, layers, windows) if method == "gptq" else {}
    for name, layer in layers.items():
        w = layer.weight.detach().float()
        group = w.shape[1] if bits == 8 else group_size
        if w.shape[1] % group:
            raise ConfigError(f"quantize_weight_only: {name} has {w.shape[1]} inputs, not a multiple of {group}")
        codes, scales = (
            gptq_group_codes(w, hessians[name], bits, group, scale_dtype=ACT_DTYPE)
            if hessians
            else rtn_codes(w, bits, group, ACT_DTYPE)
        )
        bias = layer.bias
        new = Int8WeightLinear(codes, scales, bias) if bits == 8 else Int4WeightLinear(codes, scales, group, bias)
        _set(out, name, new)
    config = getattr(out, "config", None)
    if config is not None:
        config.tie_word_embeddings = False  # lm_head is its own packed copy now
    return out
