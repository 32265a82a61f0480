"""Relative index coding of a sparse weight tensor (Han et al., 2016, §3): the positions of the non-zeros are
stored as gaps from the previous one, each gap in ``[1, max_gap]``; a longer gap is bridged by "filler" entries
that sit on a zero and carry the reserved filler symbol. Trailing zeros are bridged the same way, so the entries
always cover the tensor: ``numel ≤ (entries + 1) · max_gap`` — which lets a reader bound a declared size."""

from __future__ import annotations

import numpy as np

from shrink.errors import FileFormatError

__all__ = ["to_relative", "from_relative"]


def to_relative(
    nonzero: np.ndarray, symbols: np.ndarray, numel: int, max_gap: int, filler: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(gap_codes, entry_symbols)`` for non-zero flat positions ``nonzero`` (ascending) carrying ``symbols``.

    ``gap_codes`` holds ``gap - 1`` (in ``[0, max_gap - 1]``); filler entries carry ``filler``.
    """
    if max_gap < 1:
        raise ValueError(f"max_gap must be >= 1, got {max_gap}")
    positions = np.asarray(nonzero, dtype=np.int64)
    gaps = np.diff(positions, prepend=-1)
    if (gaps < 1).any():
        raise ValueError("non-zero positions must be strictly increasing")
    fillers = (gaps - 1) // max_gap  # entries needed before each real one
    last = int(positions[-1]) if len(positions) else -1
    trailing = max(0, (numel - 1 - last - 1) // max_gap)
    n = len(positions)
    # each real entry is preceded by its fillers: build [fill]*f_i + [real_i] for all i, then the trailing fillers
    owner = np.repeat(np.arange(n), fillers + 1)
    first_of = np.concatenate([[0], np.cumsum(fillers + 1)[:-1]]) if n else np.zeros(0, dtype=np.int64)
    is_real = np.zeros(len(owner), dtype=bool)
    is_real[first_of + fillers] = True
    gap_out = np.full(len(owner), max_gap, dtype=np.int64)
    gap_out[is_real] = gaps - fillers * max_gap
    sym_out = np.full(len(owner), filler, dtype=np.int64)
    sym_out[is_real] = np.asarray(symbols, dtype=np.int64)
    gap_out = np.concatenate([gap_out, np.full(trailing, max_gap, dtype=np.int64)])
    sym_out = np.concatenate([sym_out, np.full(trailing, filler, dtype=np.int64)])
    return gap_out - 1, sym_out


def from_relative(
    gap_codes: np.ndarray, entry_symbols: np.ndarray, numel: int, filler: int, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, symbols)`` of the real (non-filler) entries; positions outside the tensor are an error."""
    if len(gap_codes) != len(entry_symbols):
        raise FileFormatError(f"{where}: {len(gap_codes)} gaps for {len(entry_symbols)} entries")
    positions = np.cumsum(np.asarray(gap_codes, dtype=np.int64) + 1) - 1
    if len(positions) and positions[-1] >= numel:
        raise FileFormatError(f"{where}: entry position {int(positions[-1])} outside the tensor ({numel} values)")
    real = entry_symbols != filler
    return positions[real], entry_symbols[real]
