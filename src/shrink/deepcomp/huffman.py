"""Huffman coding (Huffman, 1952) written for shrink: optimal prefix-code lengths by repeatedly merging the two
least frequent subtrees (``heapq``), canonical codes (so a file stores only the code lengths), a vectorised
encoder and a canonical decoder that rejects invalid streams."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np

from shrink.errors import FileFormatError

__all__ = [
    "code_lengths",
    "canonical_codes",
    "encode",
    "decode",
    "entropy_bits",
    "mean_code_length",
    "check_lengths",
    "MAX_CODE_LENGTH",
]

#: longest code a file may declare (more than any real alphabet here needs; bounds the decoder's work per symbol)
MAX_CODE_LENGTH = 63


def code_lengths(frequencies: Sequence[int] | np.ndarray) -> np.ndarray:
    """Optimal code length per symbol (0 for symbols that never occur; 1 if only one symbol occurs)."""
    freqs = np.asarray(frequencies, dtype=np.int64)
    if freqs.ndim != 1 or (freqs < 0).any():
        raise ValueError("frequencies must be a 1-D array of non-negative counts")
    lengths = np.zeros(len(freqs), dtype=np.int64)
    used = np.flatnonzero(freqs)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    # heap of (weight, tie-break, symbols in the subtree); merging deepens every symbol of both subtrees by one
    heap: list[tuple[int, int, list[int]]] = [(int(freqs[s]), int(s), [int(s)]) for s in used]
    heapq.heapify(heap)
    counter = len(freqs)
    while len(heap) > 1:
        w1, _, s1 = heapq.heappop(heap)
        w2, _, s2 = heapq.heappop(heap)
        lengths[s1] += 1
        lengths[s2] += 1
        heapq.heappush(heap, (w1 + w2, counter, s1 + s2))
        counter += 1
    return lengths


def check_lengths(lengths: np.ndarray, where: str) -> None:
    """Raise FileFormatError unless the lengths describe a prefix code (Kraft sum ≤ 1, each ≤ MAX_CODE_LENGTH)."""
    if (lengths < 0).any() or (lengths > MAX_CODE_LENGTH).any():
        raise FileFormatError(f"{where}: code length outside [0, {MAX_CODE_LENGTH}]")
    used = lengths[lengths > 0].astype(np.int64)
    if len(used) and sum(2 ** (MAX_CODE_LENGTH - int(n)) for n in used) > 2**MAX_CODE_LENGTH:
        raise FileFormatError(f"{where}: code lengths violate the Kraft inequality (not a prefix code)")


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code of each symbol (as an integer of ``lengths[s]`` bits): codes of equal length are consecutive
    and ordered by symbol, shorter codes first — the same rule as DEFLATE."""
    codes = np.zeros(len(lengths), dtype=np.uint64)
    code, previous = 0, 0
    for s in sorted(np.flatnonzero(lengths), key=lambda i: (int(lengths[i]), int(i))):
        code <<= int(lengths[s]) - previous
        previous = int(lengths[s])
        codes[s] = code
        code += 1
    return codes


def encode(symbols: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """Bit-pack ``symbols`` with the canonical code of ``lengths``; returns ``(bytes, number of bits)``."""
    symbols = np.asarray(symbols, dtype=np.int64)
    if len(symbols) == 0:
        return b"", 0
    if symbols.min() < 0 or symbols.max() >= len(lengths) or (lengths[symbols] == 0).any():
        raise ValueError("a symbol to encode has no code")
    codes = canonical_codes(lengths)
    sym_len = lengths[symbols].astype(np.int64)
    sym_code = codes[symbols]
    starts = np.concatenate([[0], np.cumsum(sym_len)[:-1]])
    total = int(sym_len.sum())
    bits = np.zeros(total, dtype=np.uint8)
    for j in range(int(sym_len.max())):  # j-th bit (from the most significant) of every code longer than j
        has = sym_len > j
        shift = (sym_len[has] - 1 - j).astype(np.uint64)
        bits[starts[has] + j] = ((sym_code[has] >> shift) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits).tobytes(), total


def decode(data: bytes, nbits: int, lengths: np.ndarray, count: int, where: str = "stream") -> np.ndarray:
    """Decode exactly ``count`` symbols that use exactly ``nbits`` bits of ``data``; anything else is an error."""
    if nbits > 8 * len(data):
        raise FileFormatError(f"{where}: declares {nbits} bits but holds {8 * len(data)}")
    if count > nbits:
        raise FileFormatError(f"{where}: {count} symbols cannot fit in {nbits} bits")
    check_lengths(lengths, where)
    max_len = int(lengths.max()) if len(lengths) else 0
    per_length = np.bincount(lengths[lengths > 0], minlength=max_len + 1).tolist()
    ordered = sorted(np.flatnonzero(lengths).tolist(), key=lambda s: (int(lengths[s]), s))
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=nbits).tolist()
    out = np.empty(count, dtype=np.int64)
    pos = 0
    for i in range(count):
        code = first = index = 0
        for length in range(1, max_len + 1):  # canonical decoding, one bit at a time (as in zlib's puff.c)
            if pos >= nbits:
                raise FileFormatError(f"{where}: stream ends inside symbol {i}")
            code |= bits[pos]
            pos += 1
            n = per_length[length]
            if code - first < n:
                out[i] = ordered[index + code - first]
                break
            index, first = index + n, (first + n) << 1
            code <<= 1
        else:
            raise FileFormatError(f"{where}: invalid code at symbol {i}")
    if pos != nbits:
        raise FileFormatError(f"{where}: {nbits - pos} bits left over after {count} symbols")
    return out


def entropy_bits(frequencies: Sequence[int] | np.ndarray) -> float:
    """Empirical entropy in bits per symbol of a frequency table."""
    f = np.asarray(frequencies, dtype=np.float64)
    p = f[f > 0] / f.sum()
    return float(-(p * np.log2(p)).sum()) if len(p) else 0.0


def mean_code_length(frequencies: Sequence[int] | np.ndarray, lengths: np.ndarray) -> float:
    """Expected code length in bits per symbol under the frequency table."""
    f = np.asarray(frequencies, dtype=np.float64)
    total = f.sum()
    return float((f * lengths).sum() / total) if total else 0.0
