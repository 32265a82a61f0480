"""Dense bitstreams of integer codes: ``bits`` bits per code, most significant bit first, no padding between codes
(the last byte is padded with zero bits). Any width from 1 to 16 bits; signed codes are stored offset by
``2**(bits-1)`` (two's complement is not needed: the stream holds ``code - qmin``).

This is how shrink's model file stores quantized weights at their own bit width (2, 3, 4 ... bits), see
:mod:`shrink.export.codes`. Packing runs in numpy (``unpackbits`` / ``packbits``), without a Python loop per code.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["pack_bits", "unpack_bits", "packed_bytes", "code_range", "MAX_BITS"]

MAX_BITS = 16


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bit width must be an integer from 1 to {MAX_BITS}, got {bits!r}")


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    """The codes a ``bits``-wide stream holds: ``[-2**(bits-1), 2**(bits-1) - 1]`` or ``[0, 2**bits - 1]``."""
    _check_bits(bits)
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def packed_bytes(numel: int, bits: int) -> int:
    """Bytes of the stream of ``numel`` codes at ``bits`` bits."""
    return (numel * bits + 7) // 8


def pack_bits(codes: torch.Tensor, bits: int, signed: bool | None = None) -> torch.Tensor:
    """``codes`` (an integer tensor; ``signed`` defaults to its dtype's) as a 1-D uint8 stream of ``bits`` bits per
    code. Raises ValueError when a code does not fit ``bits`` bits."""
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise TypeError(f"pack_bits packs integer codes, got {codes.dtype}")
    lo, hi = code_range(bits, codes.dtype.is_signed if signed is None else signed)
    flat = codes.detach().cpu().reshape(-1).to(torch.int32)
    if flat.numel() and (int(flat.min()) < lo or int(flat.max()) > hi):
        raise ValueError(
            f"pack_bits: codes span [{int(flat.min())}, {int(flat.max())}], outside the {bits}-bit range [{lo}, {hi}]"
        )
    offset = (flat - lo).numpy()
    if bits <= 8:
        table = np.unpackbits(offset.astype(np.uint8).reshape(-1, 1), axis=1)[:, 8 - bits :]
    else:
        table = np.unpackbits(offset.astype(">u2").view(np.uint8).reshape(-1, 2), axis=1)[:, 16 - bits :]
    return torch.from_numpy(np.packbits(table.reshape(-1)))


def unpack_bits(packed: torch.Tensor, bits: int, numel: int, signed: bool = True) -> torch.Tensor:
    """The ``numel`` codes of a :func:`pack_bits` stream, as int8 / uint8 (``bits`` <= 8) or int16 / int32.

    Raises ValueError when the stream's length does not fit ``numel`` codes or its padding bits are not zero."""
    lo, _ = code_range(bits, signed)
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise ValueError(f"unpack_bits: expected a 1-D uint8 stream, got {packed.dtype} {tuple(packed.shape)}")
    if numel < 0 or packed.numel() != packed_bytes(numel, bits):
        raise ValueError(
            f"unpack_bits: {packed.numel()} bytes do not hold {numel} codes of {bits} bits "
            f"({packed_bytes(max(numel, 0), bits)} bytes)"
        )
    stream = np.unpackbits(packed.cpu().numpy())
    if stream[numel * bits :].any():
        raise ValueError("unpack_bits: padding bits past the last code are set")
    width = 8 if bits <= 8 else 16
    table = np.zeros((numel, width), dtype=np.uint8)
    table[:, width - bits :] = stream[: numel * bits].reshape(numel, bits)
    values = np.packbits(table, axis=1)
    unsigned = values.reshape(-1) if width == 8 else values.view(">u2").reshape(-1)
    codes = unsigned.astype(np.int32) + lo
    narrow, wide = (torch.int8, torch.int16) if signed else (torch.uint8, torch.int32)
    return torch.from_numpy(codes).to(narrow if bits <= 8 else wide)
