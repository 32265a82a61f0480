"""The Deep Compression file (``.dcz``): a versioned container written and read with ``struct`` and numpy — no
pickle — holding each weight-shared tensor as a codebook plus two Huffman-coded streams (cluster indices and
relative positions), and every other tensor raw.

Layout (little-endian)::

    magic  b"SHRKDCZ\\n"   version u16   tensor count u32
    per tensor: name length u16, name (UTF-8), kind u8 (0 raw, 1 shared), ndim u8, dims u32 × ndim, then
      raw:    dtype code u8, numel × itemsize bytes
      shared: codebook size K u16, K × float32, max gap u16, entries u32,
              index code lengths u8 × (K + 1)  (symbol K = filler), gap code lengths u8 × max gap,
              index stream: bits u64 + bytes, gap stream: bits u64 + bytes
    crc32 of everything above u32

Every declared size is checked against the bytes that remain before anything is allocated; a shared tensor's
size is bounded by its entries (``numel ≤ (entries + 1) · max_gap``, each entry costing at least one bit).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from shrink.deepcomp import huffman
from shrink.deepcomp.relindex import from_relative, to_relative
from shrink.errors import FileFormatError

__all__ = ["MAGIC", "VERSION", "TensorStats", "encode_state", "decode_state", "MAX_GAP_BITS"]

MAGIC = b"SHRKDCZ\n"
VERSION = 1
MAX_GAP_BITS = 8  # as in the paper (8 bits for conv, 5 for fc); bounds the size a few bytes may declare
MAX_NAME, MAX_NDIM = 4096, 8
_DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.int64, 4: np.int32, 5: np.uint8, 6: np.bool_}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}


@dataclass
class TensorStats:
    """What one shared tensor costs: entries (non-zeros + fillers), bits of each stream, their entropies."""

    name: str
    numel: int
    nonzero: int
    clusters: int
    entries: int
    index_bits: int
    gap_bits: int
    index_entropy: float  # bits per entry of the empirical symbol distribution
    gap_entropy: float


def _shared_record(name: str, values: np.ndarray, max_gap: int) -> tuple[bytes, TensorStats]:
    flat = values.reshape(-1)
    nonzero = np.flatnonzero(flat)
    codebook = np.unique(flat[nonzero]).astype(np.float32)
    k = len(codebook)
    symbols = np.searchsorted(codebook, flat[nonzero])
    gaps, entries = to_relative(nonzero, symbols, flat.size, max_gap, filler=k)
    sym_freq = np.bincount(entries, minlength=k + 1)
    gap_freq = np.bincount(gaps, minlength=max_gap)
    sym_len, gap_len = huffman.code_lengths(sym_freq), huffman.code_lengths(gap_freq)
    sym_bytes, sym_bits = huffman.encode(entries, sym_len)
    gap_bytes, gap_bits = huffman.encode(gaps, gap_len)
    parts = [
        struct.pack("<H", k),
        codebook.astype("<f4").tobytes(),
        struct.pack("<HI", max_gap, len(entries)),
        sym_len.astype(np.uint8).tobytes(),
        gap_len.astype(np.uint8).tobytes(),
        struct.pack("<Q", sym_bits),
        sym_bytes,
        struct.pack("<Q", gap_bits),
        gap_bytes,
    ]
    stats = TensorStats(
        name,
        int(flat.size),
        len(nonzero),
        k,
        len(entries),
        sym_bits,
        gap_bits,
        huffman.entropy_bits(sym_freq),
        huffman.entropy_bits(gap_freq),
    )
    return b"".join(parts), stats


def encode_state(state: dict[str, torch.Tensor], shared: dict[str, int]) -> tuple[bytes, list[TensorStats]]:
    """The file's bytes for ``state``; tensors named in ``shared`` (name → gap bits) are weight-shared float32
    tensors (at most 65,535 distinct non-zero values), the rest are stored raw."""
    out = [MAGIC, struct.pack("<HI", VERSION, len(state))]
    stats = []
    for name, tensor in state.items():
        array = tensor.detach().cpu().contiguous().numpy()
        encoded = name.encode("utf-8")
        if len(encoded) > MAX_NAME or array.ndim > MAX_NDIM:
            raise ValueError(f"{name}: name or rank too large for the file format")
        head = struct.pack("<H", len(encoded)) + encoded
        dims = struct.pack(f"<B{array.ndim}I", array.ndim, *array.shape)
        if name in shared:
            gap_bits = shared[name]
            if array.dtype != np.float32 or not 1 <= gap_bits <= MAX_GAP_BITS:
                raise ValueError(f"{name}: shared tensors are float32 with gap bits in [1, {MAX_GAP_BITS}]")
            if len(np.unique(array[array != 0])) > 65535:
                raise ValueError(f"{name}: more than 65,535 distinct values; is it weight-shared?")
            body, st = _shared_record(name, array, 2**gap_bits)
            stats.append(st)
            out += [head, b"\x01", dims, body]
        else:
            if array.dtype not in _CODES:
                raise ValueError(f"{name}: dtype {array.dtype} cannot be stored")
            out += [
                head,
                b"\x00",
                dims,
                struct.pack("<B", _CODES[array.dtype]),
                array.astype(array.dtype.newbyteorder("<")).tobytes(),
            ]
    body = b"".join(out)
    return body + struct.pack("<I", zlib.crc32(body)), stats


class _Reader:
    """Bounds-checked cursor over the file's bytes: every read first checks the bytes remaining."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.pos, self.where = memoryview(data), 0, where

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.remaining():
            raise FileFormatError(
                f"{self.where}: {what} declares {n} bytes but only {self.remaining()} remain "
                "(truncated or corrupted file)"
            )
        chunk = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))


def _read_shared(r: _Reader, numel: int, where: str) -> np.ndarray:
    (k,) = r.unpack("<H", f"{where} codebook size")
    if k == 0:
        raise FileFormatError(f"{where}: empty codebook")
    codebook = np.frombuffer(r.take(4 * k, f"{where} codebook"), dtype="<f4")
    max_gap, entries = r.unpack("<HI", f"{where} gap/entry counts")
    if not 1 <= max_gap <= 2**MAX_GAP_BITS:
        raise FileFormatError(f"{where}: max gap {max_gap} outside [1, {2**MAX_GAP_BITS}]")
    if numel > (entries + 1) * max_gap:
        raise FileFormatError(f"{where}: {numel} values cannot be covered by {entries} entries of gap ≤ {max_gap}")
    sym_len = np.frombuffer(r.take(k + 1, f"{where} index code table"), dtype=np.uint8).astype(np.int64)
    gap_len = np.frombuffer(r.take(max_gap, f"{where} gap code table"), dtype=np.uint8).astype(np.int64)
    streams = []
    for label in ("index", "gap"):
        (nbits,) = r.unpack("<Q", f"{where} {label} stream size")
        if entries > nbits:
            raise FileFormatError(f"{where}: {entries} entries cannot fit in a {nbits}-bit {label} stream")
        data = r.take((nbits + 7) // 8, f"{where} {label} stream")
        table = sym_len if label == "index" else gap_len
        streams.append(huffman.decode(data, nbits, table, entries, f"{where} {label} stream"))
    symbols, gaps = streams
    positions, real = from_relative(gaps, symbols, numel, filler=k, where=where)
    if (real > k).any():
        raise FileFormatError(f"{where}: cluster index outside the codebook")
    flat = np.zeros(numel, dtype=np.float32)
    flat[positions] = codebook[real]
    return flat


def decode_state(data: bytes, where: str = "compressed file") -> dict[str, torch.Tensor]:
    """Parse a file's bytes back into tensors; any inconsistency raises :class:`FileFormatError`."""
    if len(data) < len(MAGIC) + 10 or data[: len(MAGIC)] != MAGIC:
        raise FileFormatError(f"{where}: not a shrink Deep Compression file (bad magic)")
    (stored_crc,) = struct.unpack("<I", data[-4:])
    body = data[:-4]
    r = _Reader(body, where)
    r.take(len(MAGIC), "magic")
    version, count = r.unpack("<HI", "header")
    if version != VERSION:
        raise FileFormatError(f"{where}: format version {version}, this shrink reads version {VERSION}")
    if zlib.crc32(body) != stored_crc:
        raise FileFormatError(f"{where}: checksum mismatch (corrupted file)")
    if count > r.remaining() // 5:  # a record takes at least 5 bytes
        raise FileFormatError(f"{where}: declares {count} tensors, more than the file can hold")
    state: dict[str, torch.Tensor] = {}
    for i in range(count):
        (name_len,) = r.unpack("<H", f"tensor {i} name length")
        if name_len > MAX_NAME:
            raise FileFormatError(f"{where}: tensor {i} name length {name_len} > {MAX_NAME}")
        try:
            name = r.take(name_len, f"tensor {i} name").decode("utf-8")
        except UnicodeDecodeError:
            raise FileFormatError(f"{where}: tensor {i} name is not UTF-8") from None
        if name in state:
            raise FileFormatError(f"{where}: tensor {name!r} appears twice")
        kind, ndim = r.unpack("<BB", f"{name!r} kind/rank")
        if ndim > MAX_NDIM:
            raise FileFormatError(f"{where}: {name!r} has rank {ndim} > {MAX_NDIM}")
        dims = r.unpack(f"<{ndim}I", f"{name!r} dims")
        numel = int(np.prod(dims, dtype=object)) if dims else 1
        if kind == 0:
            (code,) = r.unpack("<B", f"{name!r} dtype")
            if code not in _DTYPES:
                raise FileFormatError(f"{where}: {name!r} has unknown dtype code {code}")
            dtype = np.dtype(_DTYPES[code]).newbyteorder("<")
            raw = r.take(numel * dtype.itemsize, f"{name!r} data")
            array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
        elif kind == 1:
            array = _read_shared(r, numel, f"{where}: {name!r}")
        else:
            raise FileFormatError(f"{where}: {name!r} has unknown record kind {kind}")
        state[name] = torch.from_numpy(array.reshape(dims).copy())
    if r.remaining():
        raise FileFormatError(f"{where}: {r.remaining()} unexpected bytes after the last tensor")
    return state
