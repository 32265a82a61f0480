"""A float Linear prepared for integer quantization by an earlier stage.

``smooth_quant`` moves activation outliers into the weights and leaves the division on the input
(``input_smooth``); ``gptq`` rounds the weights onto a per-output-channel grid and records it (``weight_scale``,
``grid_bits``). The layer still runs in float and gives the same outputs as before; ``int8_static`` and
``int8_dynamic`` keep the smoothing and the grid when they quantize it, so the codes are exactly the rounded ones.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from shrink.errors import ConfigError, FileFormatError
from shrink.export.artifact import register_layer
from shrink.quant.numerics.qparams import QParams

__all__ = ["PreparedLinear", "recorded_grid"]


@register_layer
class PreparedLinear(nn.Linear):
    """``y = W (x * input_smooth) + b`` in float; ``weight_scale`` (when set) is the grid ``W`` lies on."""

    input_smooth: torch.Tensor | None
    weight_scale: torch.Tensor | None

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, smooth: bool = False, grid_bits: int | None = None
    ) -> None:
        super().__init__(in_features, out_features, bias)
        self.register_buffer("input_smooth", torch.ones(in_features) if smooth else None)
        self.register_buffer("weight_scale", torch.ones(out_features) if grid_bits is not None else None)
        self.grid_bits = grid_bits

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

    def set_grid(self, scale: torch.Tensor, bits: int) -> None:
        self.weight_scale, self.grid_bits = scale.detach().float().reshape(-1).clone(), bits

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
        }

    @classmethod
    def shrink_from_manifest(cls, args: dict[str, Any]) -> PreparedLinear:
        bits = args.get("grid_bits")
        if bits is not None and not (isinstance(bits, int) and 2 <= bits <= 8):
            raise FileFormatError(f"PreparedLinear: grid_bits must be an int in [2, 8] or null, got {bits!r}")
        return cls(**args)


def recorded_grid(layer: nn.Module, bits: int, where: str) -> QParams | None:
    """The per-output-channel grid an earlier ``gptq`` stage rounded ``layer``'s weights onto (None when it did
    not); a grid of another bit width than ``bits`` is an error naming ``where``."""
    scale = getattr(layer, "weight_scale", None) if isinstance(layer, PreparedLinear) else None
    if scale is None:
        return None
    assert isinstance(layer, PreparedLinear)
    if layer.grid_bits != bits:
        raise ConfigError(
            f"{where}: its weights were rounded onto a {layer.grid_bits}-bit grid by the gptq stage, but this stage "
            f"quantizes them to {bits} bits; give both the same bits"
        )
    return QParams(scale.clone(), torch.zeros_like(scale, dtype=torch.int32), bits, True, 0, None, True)
