"""A float Linear prepared for integer quantization by an earlier stage.

``smooth_quant`` (and ``awq``) move activation outliers into the weights and leave the division on the input
(``input_smooth``); ``gptq`` and ``signround`` round the weights onto a grid and record it (``weight_scale``,
``grid_bits``, for a group-wise grid ``grid_group``, and for an asymmetric one its zero points ``weight_zero``). The
layer still runs in float and gives the same outputs as before; the quantization stage that follows keeps the division
and the grid, so its codes are exactly the rounded ones: ``int8_static`` / ``int8_dynamic`` read per-output-channel
grids, ``weight_only`` per-row and group-wise ones.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from shrink.errors import ConfigError, FileFormatError
from shrink.export.artifact import register_layer
from shrink.quant.layers.convert import check_group, selected_layers, set_module
from shrink.quant.numerics.qparams import QParams
from shrink.select import Selector

__all__ = ["PreparedLinear", "recorded_grid", "recorded_group_grid", "check_unscaled"]


@register_layer
class PreparedLinear(nn.Linear):
    """``y = W (x * input_smooth) + b`` in float; ``weight_scale`` (when set) is the grid ``W`` lies on: one scale
    per output channel ``(out,)``, or with ``grid_group`` one per ``grid_group`` inputs ``(out, in / grid_group)``;
    on an asymmetric grid (``grid_zero``) ``weight_zero`` holds each scale's integer zero point, each weight then
    being ``(code - zero) * scale``."""

    input_smooth: torch.Tensor | None
    weight_scale: torch.Tensor | None
    weight_zero: torch.Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        smooth: bool = False,
        grid_bits: int | None = None,
        grid_group: int | None = None,
        grid_zero: bool = False,
    ) -> None:
        super().__init__(in_features, out_features, bias)
        if grid_group is not None and (grid_bits is None or grid_group < 1 or in_features % grid_group):
            raise ConfigError(f"PreparedLinear: grid_group {grid_group} needs grid_bits and must divide {in_features}")
        if grid_zero and grid_bits is None:
            raise ConfigError("PreparedLinear: grid_zero (zero points) needs grid_bits")
        shape = (out_features,) if grid_group is None else (out_features, in_features // grid_group)
        self.register_buffer("input_smooth", torch.ones(in_features) if smooth else None)
        self.register_buffer("weight_scale", torch.ones(shape) if grid_bits is not None else None)
        self.register_buffer("weight_zero", torch.zeros(shape) if grid_zero else None)
        self.grid_bits, self.grid_group = grid_bits, grid_group

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> PreparedLinear:
        """``layer`` itself when it is already prepared, else a copy sharing nothing with it."""
        if isinstance(layer, PreparedLinear):
            return layer
        out = cls(layer.in_features, layer.out_features, layer.bias is not None)
        with torch.no_grad():
            out.weight.copy_(layer.weight)
            if layer.bias is not None:
                assert out.bias is not None
                out.bias.copy_(layer.bias)
        return out

    def set_smoothing(self, inverse: torch.Tensor) -> None:
        self.input_smooth = inverse.detach().float().clone()

    def set_grid(
        self, scale: torch.Tensor, bits: int, group: int | None = None, zero: torch.Tensor | None = None
    ) -> None:
        """Record the grid the weight now lies on: ``scale`` ``(out,)`` per output channel, or ``(out, in / group)``
        with ``group``; ``zero``: the integer zero points of an asymmetric grid, shaped like ``scale``."""
        shape = (self.out_features,) if group is None else (self.out_features, self.in_features // group)
        self.weight_scale = scale.detach().float().reshape(shape).clone()
        self.weight_zero = None if zero is None else zero.detach().float().reshape(shape).clone()
        self.grid_bits, self.grid_group = bits, group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_smooth is not None:
            x = x * self.input_smooth.to(x.dtype)
        return F.linear(x, self.weight, self.bias)

    def shrink_manifest(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
            "smooth": self.input_smooth is not None,
            "grid_bits": self.grid_bits,
            "grid_group": self.grid_group,
            **({"grid_zero": True} if self.weight_zero is not None else {}),
        }

    @classmethod
    def shrink_from_manifest(cls, args: dict[str, Any]) -> PreparedLinear:
        bits = args.get("grid_bits")
        if bits is not None and not (isinstance(bits, int) and 2 <= bits <= 8):
            raise FileFormatError(f"PreparedLinear: grid_bits must be an int in [2, 8] or null, got {bits!r}")
        group = args.get("grid_group")
        if group is not None and not (isinstance(group, int) and group >= 1):
            raise FileFormatError(f"PreparedLinear: grid_group must be a positive int or null, got {group!r}")
        try:
            return cls(**args)
        except ConfigError as err:
            raise FileFormatError(str(err)) from err


def prepare_for_rounding(
    model: nn.Module, selector: Selector, stage: str, group: int | None
) -> dict[str, PreparedLinear]:
    """The Linears ``selector`` chooses, each replaced in ``model`` by a :class:`PreparedLinear` (its smoothing
    kept) for the rounding stage ``stage`` (gptq, signround) to put on a grid of ``group`` inputs per scale. A layer
    whose inputs the groups do not tile, or one already on a grid, is an error naming it."""
    chosen = selected_layers(model, selector, f"{stage}.selector", (nn.Linear, PreparedLinear))
    layers: dict[str, PreparedLinear] = {}
    for name, layer in chosen.items():
        assert isinstance(layer, nn.Linear)
        check_group(stage, name, layer.in_features, group)
        if isinstance(layer, PreparedLinear) and layer.weight_scale is not None:
            raise ConfigError(
                f"{stage}: layer {name!r} is already rounded onto a grid; list one rounding stage (gptq or signround)"
            )
        layers[name] = PreparedLinear.from_linear(layer)
        set_module(model, name, layers[name])
    return layers


def recorded_grid(layer: nn.Module, bits: int, where: str) -> QParams | None:
    """The per-output-channel grid an earlier ``gptq`` stage rounded ``layer``'s weights onto (None when it did
    not); a grid of another bit width than ``bits`` is an error naming ``where``."""
    scale = getattr(layer, "weight_scale", None) if isinstance(layer, PreparedLinear) else None
    if scale is None:
        return None
    assert isinstance(layer, PreparedLinear)
    _check_bits(layer, bits, where)
    if layer.grid_group is not None:
        raise ConfigError(
            f"{where}: the rounding stage (gptq or signround) put its weights on groups of {layer.grid_group} "
            "inputs, which only weight_only stores; give that stage group_size=None (one scale per output channel)"
        )
    if layer.weight_zero is not None:
        raise ConfigError(
            f"{where}: the rounding stage (gptq or signround) put its weights on an asymmetric grid, which only "
            "weight_only stores; give that stage asymmetric=False"
        )
    return QParams(scale.clone(), torch.zeros_like(scale, dtype=torch.int32), bits, True, 0, None, True)


def check_unscaled(stage: str, name: str, layer: nn.Module) -> None:
    """An input-scaling stage (smooth_quant, awq) runs once per layer and before gptq: a layer already smoothed or
    already rounded onto a grid is an error naming ``stage`` and the layer."""
    if isinstance(layer, PreparedLinear) and (layer.input_smooth is not None or layer.weight_scale is not None):
        done = "smoothed" if layer.input_smooth is not None else "rounded onto a grid (gptq or signround)"
        raise ConfigError(f"{stage}: layer {name!r} is already {done}; list {stage} once, before gptq / signround")


def _check_bits(layer: PreparedLinear, bits: int, where: str) -> None:
    if layer.grid_bits != bits:
        raise ConfigError(
            f"{where}: its weights were rounded onto a {layer.grid_bits}-bit grid by a rounding stage (gptq or "
            f"signround), but this stage quantizes them to {bits} bits; give both the same bits"
        )


def recorded_group_grid(
    layer: nn.Module, bits: int, group: int | None, asymmetric: bool, where: str
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The scales ``(out, in / group)`` and (asymmetric grids) zero points of the grid an earlier ``gptq`` or
    ``signround`` stage rounded ``layer``'s weights onto (None when it did not); ``group`` None means one scale per
    row. Another bit width, group size or symmetry than this stage's is an error naming ``where``."""
    scale = getattr(layer, "weight_scale", None) if isinstance(layer, PreparedLinear) else None
    if scale is None:
        return None
    assert isinstance(layer, PreparedLinear)
    _check_bits(layer, bits, where)
    if layer.grid_group != group:
        rounded, stored = (f"groups of {g} inputs" if g else "one scale per row" for g in (layer.grid_group, group))
        raise ConfigError(
            f"{where}: the rounding stage (gptq or signround) put its weights on {rounded}, but this stage stores "
            f"{stored}; give both the same group_size"
        )
    zero = layer.weight_zero
    if (zero is not None) != asymmetric:
        rounded, stored = (("an asymmetric" if a else "a symmetric") for a in (zero is not None, asymmetric))
        raise ConfigError(
            f"{where}: the rounding stage (gptq or signround) put its weights on {rounded} grid, but this stage "
            f"stores {stored} one; give both the same asymmetric setting"
        )
    rows = layer.out_features
    return scale.reshape(rows, -1).clone(), None if zero is None else zero.reshape(rows, -1).clone()
