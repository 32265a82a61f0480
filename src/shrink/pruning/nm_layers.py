"""Packed N:M sparse layers: only the ``n/m`` kept weights are stored, plus an ``m``-bit field per group.

``NMSparseLinear`` and ``NMSparseConv`` hold ``values`` (a trainable parameter, so fine-tuning after packing
keeps the pattern by construction) and ``bits`` (uint8). ``dense_weight()`` rebuilds the dense weight exactly;
the forward pass runs a dense matmul/conv on it. On CPU there is no N:M kernel: these layers make files smaller,
not inference faster; speed from 2:4 needs sparse tensor cores (NVIDIA Ampere or newer).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from shrink.errors import ModelError
from shrink.export.artifact import register_layer
from shrink.pruning.masks import get_mask, weight_of
from shrink.pruning.nm_pattern import check_nm, from_input_last, input_last, nm_mask, pack_bits, unpack_bits

__all__ = ["NMSparseLinear", "NMSparseConv", "pack_nm"]


class _NMPacked(nn.Module):
    """Shared storage of the packed layers: ``values`` (groups, n) and ``bits`` (one m-bit field per group)."""

    values: nn.Parameter
    bits: torch.Tensor
    bias: nn.Parameter | None
    n: int
    m: int
    weight_shape: tuple[int, ...]

    def _init_storage(self, weight_shape: tuple[int, ...], n: int, m: int, bias: bool) -> None:
        if not 0 < n < m:
            raise ValueError(f"N:M needs 0 < n < m, got {n}:{m}")
        if weight_shape[1] % m:
            raise ValueError(f"input dimension {weight_shape[1]} is not a multiple of m={m}")
        self.n, self.m = n, m
        self.weight_shape = tuple(int(s) for s in weight_shape)
        groups = self.num_groups
        self.values = nn.Parameter(torch.zeros(groups, n))
        self.register_buffer("bits", torch.zeros((groups * m + 7) // 8, dtype=torch.uint8))
        self.bias = nn.Parameter(torch.zeros(weight_shape[0])) if bias else None
        self.register_load_state_dict_post_hook(_validate_after_load)

    @property
    def num_groups(self) -> int:
        numel = 1
        for s in self.weight_shape:
            numel *= s
        return numel // self.m

    def keep_mask(self) -> torch.Tensor:
        """Boolean mask of the kept weights, in the weight's own shape."""
        flags = unpack_bits(self.bits, self.num_groups * self.m).reshape(-1, self.m)
        return from_input_last(flags, self.weight_shape)

    def dense_weight(self) -> torch.Tensor:
        """The dense weight (zeros where pruned), differentiable with respect to ``values``."""
        flags = unpack_bits(self.bits, self.num_groups * self.m).reshape(-1, self.m)
        # kept positions of each group in ascending order (the order the values were packed in): TopK over
        # flag * (m - position), then one scatter; both export to ONNX and fold to a constant weight there
        rank = torch.arange(self.m, 0, -1, device=flags.device, dtype=self.values.dtype)
        positions = (flags.to(self.values.dtype) * rank).topk(self.n, dim=1).indices
        dense = torch.zeros(flags.shape, dtype=self.values.dtype, device=self.values.device)
        return from_input_last(dense.scatter(1, positions, self.values), self.weight_shape)

    @torch.no_grad()
    def _fill(self, weight: torch.Tensor, bias: torch.Tensor | None, mask: torch.Tensor | None) -> None:
        keep = nm_mask(weight, self.n, self.m) if mask is None else mask.to(torch.bool)
        if not check_nm(keep, self.n, self.m):
            raise ModelError(
                f"mask of a weight of shape {tuple(weight.shape)} is not a valid {self.n}:{self.m} pattern"
            )
        flags = input_last(keep).reshape(-1, self.m)
        self.values.copy_(input_last(weight.detach()).reshape(-1, self.m)[flags].reshape(-1, self.n))
        self.bits.copy_(pack_bits(flags))
        if bias is not None and self.bias is not None:
            self.bias.copy_(bias.detach())

    def shrink_param_count(self) -> tuple[int, int]:
        """(dense weight + bias elements, non-zeros): the logical size, not the packed storage."""
        total = self.num_groups * self.m
        nonzero = int(torch.count_nonzero(self.values.detach()))
        if self.bias is not None:
            total += self.bias.numel()
            nonzero += int(torch.count_nonzero(self.bias.detach()))
        return total, nonzero


def _validate_after_load(module: _NMPacked, _keys: Any) -> None:
    flags = unpack_bits(module.bits, module.num_groups * module.m).reshape(-1, module.m)
    if not bool((flags.sum(dim=1) == module.n).all()):
        raise ModelError(f"{type(module).__name__}: loaded bit fields are not a valid {module.n}:{module.m} pattern")


@register_layer
class NMSparseLinear(_NMPacked):
    """A Linear layer whose weight is stored in packed N:M form."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, n: int = 2, m: int = 4) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_storage((out_features, in_features), n, m, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dense_weight(), self.bias)

    def shrink_manifest(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
            "n": self.n,
            "m": self.m,
        }

    @classmethod
    def shrink_from_manifest(cls, args: dict[str, Any]) -> NMSparseLinear:
        return cls(
            int(args["in_features"]), int(args["out_features"]), bool(args["bias"]), int(args["n"]), int(args["m"])
        )


_CONV_ARGS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")


@register_layer
class NMSparseConv(_NMPacked):
    """A Conv1d/Conv2d (zero padding) whose weight is stored in packed N:M form, groups along input channels."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...] | str,
        dilation: tuple[int, ...],
        groups: int,
        bias: bool,
        n: int = 2,
        m: int = 4,
    ) -> None:
        super().__init__()
        if dims not in (1, 2):
            raise ValueError(f"NMSparseConv supports 1-d and 2-d convolutions, got dims={dims}")
        self.dims = dims
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.dilation = tuple(kernel_size), tuple(stride), tuple(dilation)
        self.padding = padding if isinstance(padding, str) else tuple(padding)
        self._init_storage((out_channels, in_channels // groups, *self.kernel_size), n, m, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = F.conv1d if self.dims == 1 else F.conv2d
        return conv(x, self.dense_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)

    def shrink_manifest(self) -> dict[str, Any]:
        args: dict[str, Any] = {k: getattr(self, k) for k in _CONV_ARGS}
        args = {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}
        return {"dims": self.dims, **args, "bias": self.bias is not None, "n": self.n, "m": self.m}

    @classmethod
    def shrink_from_manifest(cls, args: dict[str, Any]) -> NMSparseConv:
        tup: dict[str, Any] = {k: tuple(args[k]) if isinstance(args[k], list) else args[k] for k in _CONV_ARGS}
        return cls(int(args["dims"]), **tup, bias=bool(args["bias"]), n=int(args["n"]), m=int(args["m"]))


def pack_nm(module: nn.Module, n: int, m: int) -> _NMPacked:
    """A packed copy of a Linear / Conv1d / Conv2d (its effective, possibly masked, weight); the mask already on it
    is used if it is a valid ``n:m`` pattern, else the ``n`` largest of each group are kept."""
    weight = weight_of(module).detach()
    mask = get_mask(module)
    if mask is None or not check_nm(mask, n, m):
        mask = weight != 0 if check_nm(weight, n, m) else None
    if isinstance(module, nn.Linear):
        packed: _NMPacked = NMSparseLinear(module.in_features, module.out_features, module.bias is not None, n, m)
    elif isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if module.padding_mode != "zeros":
            raise ModelError(f"N:M packing supports zero-padded convolutions, got padding_mode={module.padding_mode!r}")
        packed = NMSparseConv(
            1 if isinstance(module, nn.Conv1d) else 2,
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            module.groups,
            module.bias is not None,
            n,
            m,
        )
    else:
        raise ModelError(f"N:M packing supports Linear, Conv1d and Conv2d, got {type(module).__name__}")
    packed._fill(weight, module.bias, mask)
    return packed.to(weight.device).train(module.training)
