"""The Deep Compression file: exact round trips and hostile files (always FileFormatError, bounded memory)."""

import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from torch import nn

from shrink.deepcomp import MAGIC, decode_state, encode_state, load_compressed, read_compressed, save_compressed
from shrink.deepcomp.sharing import share_weights
from shrink.errors import FileFormatError, ModelError
from shrink.pruning.masks import make_permanent


def _factory():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(2, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 5))


def _clustered():
    model = _factory()
    with torch.no_grad():
        for m in (model[0], model[4]):
            m.weight.mul_((torch.rand_like(m.weight) > 0.7).float())
    share_weights(model[0], 3)
    share_weights(model[4], 2)
    return make_permanent(model).eval()


def _crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_file_round_trip_is_exact(tmp_path):
    model = _clustered()
    stats = save_compressed(model, tmp_path / "m.dcz")
    assert {s.name for s in stats} == {"0.weight", "4.weight"}
    loaded = load_compressed(tmp_path / "m.dcz", _factory)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.randn(3, 2, 6, 6)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    for s in stats:  # Huffman streams within one bit per entry of the empirical entropy
        assert s.index_bits / s.entries < s.index_entropy + 1 and s.gap_bits / s.entries < s.gap_entropy + 1
    with pytest.raises(ModelError, match="shape"):
        load_compressed(tmp_path / "m.dcz", lambda: nn.Sequential(nn.Conv2d(2, 7, 3)))


def test_raw_dtypes_and_scalars_round_trip():
    state = {
        "a": torch.arange(5, dtype=torch.int64),
        "b": torch.tensor(3.5),
        "c": torch.ones(2, 2, dtype=torch.bool),
        "w": torch.tensor([[0.0, 0.5, 0.0], [-0.25, 0.5, 0.0]]),
    }
    data, _ = encode_state(state, {"w": 2})
    out = decode_state(data)
    assert all(torch.equal(out[k], v) and out[k].dtype == v.dtype for k, v in state.items())


def test_truncated_corrupted_and_wrong_files_raise(tmp_path):
    data, _ = encode_state(_clustered().state_dict(), {"0.weight": 8, "4.weight": 5})
    for cut in range(0, len(data), 7):
        with pytest.raises(FileFormatError):
            decode_state(data[:cut])
    rng = np.random.default_rng(0)
    for _ in range(200):
        broken = bytearray(data)
        broken[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        with pytest.raises(FileFormatError):
            decode_state(bytes(broken))
    with pytest.raises(FileFormatError, match="magic"):
        decode_state(b"PK\x03\x04" + data[4:])
    bad_version = bytearray(data)
    bad_version[len(MAGIC)] = 9
    with pytest.raises(FileFormatError, match="version"):
        decode_state(bytes(bad_version))
    (tmp_path / "x.dcz").write_bytes(data[:-1])
    with pytest.raises(FileFormatError):
        read_compressed(tmp_path / "x.dcz")


def _shared_file(dims, k=2, max_gap=4, entries=3, sym_len=(1, 2, 2), gap_len=(2, 2, 2, 2), streams=None):
    """A hand-made file with one shared tensor, its checksum valid, so only the structural checks can object."""
    body = MAGIC + struct.pack("<HI", 1, 1) + struct.pack("<H", 1) + b"w" + b"\x01"
    body += struct.pack(f"<B{len(dims)}I", len(dims), *dims)
    body += struct.pack("<H", k) + np.arange(1, k + 1, dtype="<f4").tobytes() + struct.pack("<HI", max_gap, entries)
    body += bytes(sym_len) + bytes(gap_len)
    for nbits, payload in streams or [(entries * 2, b"\x00" * entries), (entries * 2, b"\x00" * entries)]:
        body += struct.pack("<Q", nbits) + payload
    return _crc(body)


def test_hostile_declared_sizes_are_refused_before_allocation():
    tracemalloc.start()
    try:
        cases = {
            "cannot be covered": _shared_file((2**31, 2**31)),  # 4.6e18 values declared by a 100-byte file
            "remain": _shared_file((4,), k=60000),  # codebook larger than the file
            "cannot fit": _shared_file((4,), entries=10**9, streams=[(8, b"\x00"), (8, b"\x00")]),  # > stream bits
            "Kraft": _shared_file((4,), sym_len=(1, 1, 1)),  # inconsistent code table
            "max gap": _shared_file((4,), max_gap=0),
        }
        raw = MAGIC + struct.pack("<HI", 1, 1) + struct.pack("<H", 1) + b"r" + b"\x00"
        cases["remain "] = _crc(raw + struct.pack("<B2I", 2, 2**31, 2**31) + b"\x00" + b"\x00" * 16)
        cases["more than the file"] = _crc(MAGIC + struct.pack("<HI", 1, 2**32 - 1) + b"\x00" * 20)
        cases["unknown record kind"] = _crc(MAGIC + struct.pack("<HI", 1, 1) + struct.pack("<H", 1) + b"r\x07\x00")
        for message, data in cases.items():
            with pytest.raises(FileFormatError, match=message.strip()):
                decode_state(data)
        assert tracemalloc.get_traced_memory()[1] < 16 * 2**20
    finally:
        tracemalloc.stop()


def test_inconsistent_streams_raise():
    # a valid 3-entry stream re-declared for a 4-entry tensor of 100 values, and positions beyond the tensor
    with pytest.raises(FileFormatError):
        decode_state(_shared_file((100,), entries=3))
    with pytest.raises(FileFormatError, match="outside"):  # gaps of 4 take position 11 past a 5-value tensor
        decode_state(
            _shared_file((5,), entries=3, streams=[(3, b"\x00"), (3, b"\x00")], sym_len=(1, 2, 2), gap_len=(0, 0, 0, 1))
        )
