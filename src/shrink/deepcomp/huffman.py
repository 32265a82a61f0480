"""Huffman coding (Huffman, 1952) written for shrink: optimal prefix-code lengths by repeatedly merging the two
least frequent subtrees (``heapq``), canonical codes (so a file stores only the code lengths), a vectorised
encoder and a table-driven vectorised decoder (no per-bit Python loop) that rejects invalid streams."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence

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

#: bit positions decoded per vectorised step (bounds the decoder's working memory to ~10 MiB)
_CHUNK_BITS = 1 << 18
#: code tables up to this many bits are direct lookup tables (2^16 entries); longer codes use binary search
_TABLE_BITS = 16
_WORD_BITS = 64
#: symbols per anchor when following the chain of codeword starts (a power of two)
_STRIDE = 64


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


def _chain(jump: np.ndarray, end: int) -> np.ndarray:
    """Positions ``0, jump[0], jump[jump[0]], ...`` below ``end`` (``jump`` maps ``end`` to itself).

    Six rounds of pointer doubling give the 64-step map; a short Python walk follows it (one step per 64 symbols),
    and 63 vectorised steps from those anchors fill in the positions between them.
    """
    leap = jump
    for _ in range(_STRIDE.bit_length() - 1):
        leap = leap[leap]
    anchors, p = [], 0
    while p != end:
        anchors.append(p)
        p = int(leap[p])
    rows = [np.asarray(anchors, dtype=jump.dtype)]
    for _ in range(_STRIDE - 1):
        rows.append(jump[rows[-1]])
    positions = np.stack(rows, axis=1).ravel()
    return positions[positions != end]


def _windows(data: bytes, pos: int, n: int, width: int, nbits: int) -> np.ndarray:
    """The ``width`` bits of the stream starting at bit positions ``pos .. pos + n - 1`` as unsigned integers
    (bits past ``nbits`` read as 0)."""
    first = pos // 8
    stop = min(len(data), (pos + n + width + 7) // 8)
    raw = np.frombuffer(data, dtype=np.uint8, count=stop - first, offset=first)
    bits = np.unpackbits(raw)[pos - 8 * first :][: min(nbits - pos, n + width)]
    if width <= _WORD_BITS - 7:  # one 64-bit word per byte, shifted into place per bit position
        padded = np.zeros(((n + width + 7) // 8 + 8) * 8, dtype=np.uint8)
        padded[: len(bits)] = bits
        octets = np.packbits(padded).astype(np.uint64)
        words = np.zeros(len(octets) - 7, dtype=np.uint64)
        for k in range(8):
            words = (words << np.uint64(8)) | octets[k : k + len(words)]
        p = np.arange(n, dtype=np.uint64)
        return (words[p >> np.uint64(3)] << (p & np.uint64(7))) >> np.uint64(_WORD_BITS - width)
    padded = np.zeros(n + width, dtype=np.uint64)
    padded[: len(bits)] = bits
    window = np.zeros(n, dtype=np.uint64)
    for k in range(width):
        window = (window << np.uint64(1)) | padded[k : k + n]
    return window


def _code_table(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Symbols in canonical order, their code lengths, and a lookup ``window -> codeword index`` (-1: no codeword).

    Canonical codes left-aligned to ``max_len`` bits are increasing; codeword ``j`` owns the windows
    ``[lo[j], lo[j] + span[j])``. Short codes use a direct table of ``2^max_len`` entries, long ones binary search.
    """
    ordered = np.array(sorted(np.flatnonzero(lengths).tolist(), key=lambda s: (int(lengths[s]), s)), dtype=np.int64)
    max_len = int(lengths.max())
    code_len = lengths[ordered]
    lo = canonical_codes(lengths)[ordered] << (max_len - code_len).astype(np.uint64)
    span = np.uint64(1) << (max_len - code_len).astype(np.uint64)
    if max_len <= _TABLE_BITS:
        # canonical codewords own consecutive runs of windows from 0; windows past the last one are no codeword
        owners = np.repeat(np.arange(len(ordered), dtype=np.int32), span.astype(np.int64))
        table = np.concatenate([owners, np.full((1 << max_len) - len(owners), -1, dtype=np.int32)])
        return ordered, code_len, lambda window: table[window.astype(np.intp)]

    def search(window: np.ndarray) -> np.ndarray:
        j = np.searchsorted(lo, window, side="right") - 1  # lo[0] == 0, so j >= 0
        return np.where(window - lo[j] < span[j], j, -1)

    return ordered, code_len, search


def decode(data: bytes, nbits: int, lengths: np.ndarray, count: int, where: str = "stream") -> np.ndarray:
    """Decode exactly ``count`` symbols that use exactly ``nbits`` bits of ``data``; anything else is an error.

    Table-driven and vectorised, one chunk of bit positions at a time: the ``max_len``-bit window at every position
    is looked up in the canonical code table, giving the code length a codeword starting there would have; the
    real codeword starts are the chain 0 → 0 + length → ..., found by pointer doubling. Working memory is bounded
    by the chunk size and the code table, not by the stream.
    """
    if nbits > 8 * len(data):
        raise FileFormatError(f"{where}: declares {nbits} bits but holds {8 * len(data)}")
    if count > nbits:
        raise FileFormatError(f"{where}: {count} symbols cannot fit in {nbits} bits")
    lengths = np.asarray(lengths, dtype=np.int64)
    check_lengths(lengths, where)
    out = np.empty(count, dtype=np.int64)
    if nbits == 0:
        return out
    if not lengths.any():
        raise FileFormatError(f"{where}: {nbits} bits but the code table has no codes")
    ordered, code_len, lookup = _code_table(lengths)
    max_len = int(code_len[-1])
    pos, done = 0, 0
    while pos < nbits:
        n = min(_CHUNK_BITS, nbits - pos)
        j = lookup(_windows(data, pos, n, max_len, nbits))
        here = np.arange(n, dtype=np.int32)
        length = np.where(j >= 0, code_len[j], 0).astype(np.int32)
        ok = (j >= 0) & (here + length <= nbits - pos)  # a codeword, and wholly inside the stream
        jump = np.append(np.where(ok, np.minimum(here + length, n), n), n).astype(np.int32)
        starts = _chain(jump, n)
        bad = np.flatnonzero(~ok[starts])
        if len(bad):
            i, at = done + int(bad[0]), pos + int(starts[bad[0]])
            if at + max_len > nbits:
                raise FileFormatError(f"{where}: stream ends inside symbol {i}")
            raise FileFormatError(f"{where}: invalid code at symbol {i}")
        if done + len(starts) > count:
            raise FileFormatError(f"{where}: bits left over after {count} symbols")
        out[done : done + len(starts)] = ordered[j[starts]]
        done += len(starts)
        pos += int(starts[-1]) + int(length[starts[-1]])
    if done != count:
        raise FileFormatError(f"{where}: stream ends inside symbol {done} (only {done} of {count} symbols coded)")
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
