"""Float weights that lie on per-row symmetric integer grids, stored as their codes plus one scale per row.

An LSTM that ``int8_dynamic`` rounded (labelled ``shrink_onnx_int8``, see :mod:`shrink.export.lstm_int8`) keeps float
weights in memory, each row's largest magnitude at ``±qmax`` times its scale. :func:`shrink.save` stores such a
weight as int8 codes (``KEY@codes``) and fp32 row scales (``KEY@scale``) when ``codes x scale`` gives back every
weight bit for bit, and as fp32 otherwise; the manifest's layout entry ``{"scaled": {"bits": 8, "shape": [rows,
cols]}}`` says so, and :func:`decode_scaled` checks every size before it allocates anything.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from shrink.errors import FileFormatError

__all__ = ["scaled_weights", "encode_scaled", "check_scaled_layout", "decode_scaled"]

#: state-dict keys of labelled LSTM weights -> their grid's largest code
_LABEL = "shrink_onnx_int8"


def scaled_weights(model: nn.Module) -> dict[str, int]:
    """``{state-dict key: qmax}`` of every weight matrix of ``model``'s int8-rounded LSTMs."""
    out: dict[str, int] = {}
    for name, module in model.named_modules():
        label = getattr(module, _LABEL, None)
        if not isinstance(module, nn.LSTM) or not isinstance(label, str):
            continue
        qmax = int(dict(item.split("=") for item in label.split())["qmax"])
        prefix = f"{name}." if name else ""
        out.update({prefix + p: qmax for p, _ in module.named_parameters() if p.startswith("weight_")})
    return out


def encode_scaled(key: str, t: torch.Tensor, qmax: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The tensors and layout entry storing ``t`` as 8-bit codes and row scales, or None when that would not give
    ``t`` back exactly (then it is stored as it is)."""
    if t.dtype != torch.float32 or t.dim() != 2 or not 1 <= qmax <= 127:
        return None
    scale = t.abs().amax(dim=1) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.round(t / scale[:, None]).clamp(-qmax, qmax)
    if not torch.equal(codes * scale[:, None], t):
        return None
    tensors = {f"{key}@codes": codes.to(torch.int8).contiguous(), f"{key}@scale": scale.contiguous()}
    return tensors, {"scaled": {"bits": 8, "shape": list(t.shape)}}


def check_scaled_layout(info: Any, where: str) -> None:
    """Raise FileFormatError unless ``info`` is a well-formed ``scaled`` layout entry."""
    if not isinstance(info, dict) or set(info) != {"bits", "shape"} or info["bits"] != 8:
        raise FileFormatError(f"{where}: expected {{'bits': 8, 'shape': [rows, cols]}}, got {info!r}")
    shape = info["shape"]
    if not isinstance(shape, list) or len(shape) != 2 or not all(type(s) is int and 0 <= s < 2**31 for s in shape):
        raise FileFormatError(f"{where}: shape {shape!r} is not [rows, cols]")


def decode_scaled(key: str, info: dict[str, Any], raw: dict[str, torch.Tensor], where: str) -> torch.Tensor:
    """The float tensor ``key`` from its codes and row scales in ``raw`` (``info`` checked)."""
    w = f"{where}: scaled tensor {key!r}"
    rows, cols = info["shape"]
    codes, scale = raw.get(f"{key}@codes"), raw.get(f"{key}@scale")
    if codes is None or scale is None:
        raise FileFormatError(f"{w}: its codes or scales are missing")
    if codes.dtype != torch.int8 or tuple(codes.shape) != (rows, cols):
        raise FileFormatError(f"{w}: codes must be int8 {[rows, cols]}, got {codes.dtype} {tuple(codes.shape)}")
    if scale.dtype != torch.float32 or tuple(scale.shape) != (rows,) or not bool(torch.isfinite(scale).all()):
        raise FileFormatError(f"{w}: scales must be {rows} finite fp32 values, got {scale.dtype} {tuple(scale.shape)}")
    if math.prod(info["shape"]) and int(codes.abs().max()) > 127:
        raise FileFormatError(f"{w}: codes outside [-127, 127]")
    return codes.to(torch.float32) * scale[:, None]
