"""``Factorized``: the module a decomposed layer becomes — an ``nn.Sequential`` of standard Linear / Conv2d layers
that shrink's model file can rebuild (it records its children's shapes) and ONNX exports as plain ops."""

from __future__ import annotations

from typing import Any

from torch import nn

from shrink.errors import FileFormatError
from shrink.export.artifact import register_layer

__all__ = ["Factorized"]

_CONV_KEYS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode")


def _child_args(layer: nn.Module) -> dict[str, Any]:
    if isinstance(layer, nn.Linear):
        return {
            "type": "Linear",
            "in_features": layer.in_features,
            "out_features": layer.out_features,
            "bias": layer.bias is not None,
        }
    if isinstance(layer, nn.Conv2d):
        args: dict[str, Any] = {"type": "Conv2d", "bias": layer.bias is not None}
        for key in _CONV_KEYS:
            value = getattr(layer, key)
            args[key] = list(value) if isinstance(value, tuple) else value
        return args
    raise TypeError(f"Factorized holds Linear and Conv2d layers only, got {type(layer).__name__}")


def _build_child(args: dict[str, Any]) -> nn.Module:
    kind = args.get("type")
    try:
        if kind == "Linear":
            return nn.Linear(int(args["in_features"]), int(args["out_features"]), bias=bool(args["bias"]))
        if kind == "Conv2d":
            kw = {k: tuple(args[k]) if isinstance(args[k], list) else args[k] for k in _CONV_KEYS}
            return nn.Conv2d(**kw, bias=bool(args["bias"]))  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError) as exc:
        raise FileFormatError(f"Factorized: bad layer arguments {args!r}: {exc}") from None
    raise FileFormatError(f"Factorized: unknown layer type {kind!r}")


@register_layer
class Factorized(nn.Sequential):
    """A low-rank factorization of one layer: its factors applied in sequence. ``method`` and ``rank`` say how."""

    def __init__(self, *layers: nn.Module, method: str = "", rank: str = "") -> None:
        super().__init__(*layers)
        self.method, self.rank = method, rank

    def shrink_manifest(self) -> dict[str, Any]:
        return {"method": self.method, "rank": self.rank, "layers": [_child_args(m) for m in self]}

    @classmethod
    def shrink_from_manifest(cls, args: dict[str, Any]) -> Factorized:
        layers = args.get("layers")
        if not isinstance(layers, list) or not layers or not all(isinstance(a, dict) for a in layers):
            raise FileFormatError("Factorized: manifest lacks its layer list")
        return cls(
            *(_build_child(a) for a in layers), method=str(args.get("method", "")), rank=str(args.get("rank", ""))
        )
