"""Quantized weight codes in shrink's model file, stored at their own bit width.

A layer names the integer buffers that hold ``b``-bit codes with ``shrink_code_bits() -> {buffer name: b}`` (e.g.
``QuantLinear`` at 4 bits: ``{"weight_int": 4}``, its int8 buffer in memory). :func:`shrink.save` stores each such
tensor as a dense bitstream of ``b`` bits per code (``KEY@codes``, see :mod:`shrink.export.bitpack`), or, when it is
smaller, as a bitmask of the non-zero codes (``KEY@mask``) followed by the stream of the non-zero codes only. The
manifest's layout entry ``{"codes": {"bits", "shape", "dtype", "sparse"}}`` says which; :func:`decode_codes` checks
every field and size before it allocates anything.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from shrink.errors import FileFormatError, ModelError
from shrink.export.bitpack import pack_bits, unpack_bits

__all__ = ["code_bits_of", "encode_codes", "decode_codes", "check_codes_layout", "code_stream_bytes", "CODE_DTYPES"]

#: integer dtypes a code tensor may have in memory, by the name the layout records
CODE_DTYPES = {"int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16, "int32": torch.int32}
_MAX_BITS = {"int8": 8, "uint8": 8, "int16": 16, "int32": 16}


def code_bits_of(model: nn.Module) -> dict[str, int]:
    """``{state-dict key: bits}`` of every code tensor the layers of ``model`` declare."""
    out: dict[str, int] = {}
    for name, module in model.named_modules():
        declare = getattr(module, "shrink_code_bits", None)
        if declare is None:
            continue
        for buffer, bits in declare().items():
            t = getattr(module, buffer, None)
            if not isinstance(t, torch.Tensor) or t.is_floating_point() or str(t.dtype)[6:] not in CODE_DTYPES:
                raise ModelError(f"{name or 'model'}: declared code tensor {buffer!r} is not an integer tensor")
            out[f"{name}.{buffer}" if name else buffer] = int(bits)
    return out


def code_stream_bytes(numel: int, nonzero: int, bits: int) -> int:
    """Bytes a code tensor of ``numel`` codes (``nonzero`` of them non-zero) takes in the file: the smaller of the
    dense stream and mask + stream of the non-zero codes."""
    dense = (numel * bits + 7) // 8
    sparse = (numel + 7) // 8 + (nonzero * bits + 7) // 8
    return min(dense, sparse)


def encode_codes(key: str, t: torch.Tensor, bits: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors to store for code tensor ``t`` and its layout entry."""

    dtype = str(t.dtype)[6:]
    if dtype not in CODE_DTYPES or not 1 <= bits <= _MAX_BITS[dtype]:
        raise ModelError(f"{key}: cannot store {t.dtype} codes at {bits} bits")
    signed = t.dtype.is_signed and dtype != "int32"  # int32 holds unsigned 9-16-bit codes (qparams.storage_dtype)
    flat = t.detach().cpu().reshape(-1)
    nz = flat != 0
    count = int(nz.sum())
    info = {"bits": bits, "shape": list(t.shape), "dtype": dtype, "sparse": False}
    try:
        if code_stream_bytes(flat.numel(), count, bits) < (flat.numel() * bits + 7) // 8:
            info["sparse"] = True
            mask = torch.from_numpy(np.packbits(nz.numpy()))
            return {key + "@mask": mask, key + "@codes": pack_bits(flat[nz], bits, signed)}, {"codes": info}
        return {key + "@codes": pack_bits(flat, bits, signed)}, {"codes": info}
    except ValueError as exc:
        raise ModelError(f"{key}: {exc}") from None


def check_codes_layout(info: Any, where: str) -> None:
    """Raise FileFormatError unless ``info`` is a well-formed ``codes`` layout entry."""
    if not isinstance(info, dict) or set(info) != {"bits", "shape", "dtype", "sparse"}:
        raise FileFormatError(f"{where}: expected bits, shape, dtype and sparse, got {info!r}")
    if info["dtype"] not in CODE_DTYPES or type(info["sparse"]) is not bool:
        raise FileFormatError(f"{where}: bad dtype {info['dtype']!r} or sparse flag {info['sparse']!r}")
    bits = info["bits"]
    if type(bits) is not int or not 1 <= bits <= _MAX_BITS[info["dtype"]]:
        raise FileFormatError(f"{where}: bit width {bits!r} does not fit {info['dtype']}")


def _uint8_stream(raw: dict[str, torch.Tensor], name: str, size: int, where: str) -> torch.Tensor:
    t = raw.get(name)
    if t is None:
        raise FileFormatError(f"{where}: {name!r} is missing")
    if t.dtype != torch.uint8 or t.dim() != 1 or t.numel() != size:
        raise FileFormatError(f"{where}: {name!r} must be {size} uint8 bytes, got {t.dtype} {tuple(t.shape)}")
    return t


def decode_codes(key: str, info: dict[str, Any], shape: list[int], raw: dict[str, torch.Tensor], where: str):
    """The code tensor ``key`` from the file's ``raw`` tensors (``info`` checked, ``shape`` validated)."""

    w = f"{where}: code tensor {key!r}"
    bits, dtype = info["bits"], info["dtype"]
    signed = dtype in ("int8", "int16")
    numel = math.prod(shape)
    try:
        if not info["sparse"]:
            stream = _uint8_stream(raw, key + "@codes", (numel * bits + 7) // 8, w)
            codes = unpack_bits(stream, bits, numel, signed)
        else:
            mask = _uint8_stream(raw, key + "@mask", (numel + 7) // 8, w)
            flags = np.unpackbits(mask.numpy())
            if flags[numel:].any():
                raise FileFormatError(f"{w}: mask has bits set past the end of the tensor")
            nz = torch.from_numpy(flags[:numel].astype(bool))
            count = int(nz.sum())
            values = unpack_bits(_uint8_stream(raw, key + "@codes", (count * bits + 7) // 8, w), bits, count, signed)
            codes = torch.zeros(numel, dtype=values.dtype)
            codes[nz] = values
    except FileFormatError:
        raise
    except ValueError as exc:
        raise FileFormatError(f"{w}: {exc}") from None
    return codes.to(CODE_DTYPES[dtype]).reshape(shape)
