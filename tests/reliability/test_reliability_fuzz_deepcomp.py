"""The Deep Compression file decoder (shrink.deepcomp) under truncation, corruption and hostile headers: it returns
the tensors or raises FileFormatError, nothing else, and stays fast (no work the file's bytes do not justify)."""

from __future__ import annotations

import os
import struct
import time
import zlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shrink.errors import FileFormatError

N = int(os.environ.get("SHRINK_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=N, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    codebook = torch.tensor([-0.5, -0.1, 0.2, 0.7])
    w = codebook[torch.randint(0, 4, (16, 24), generator=g)]
    w[torch.rand(16, 24, generator=g) < 0.7] = 0  # 70% zeros, 4 shared values
    return {"fc.weight": w, "fc.bias": torch.randn(16, generator=g), "steps": torch.tensor([3])}


@pytest.fixture(scope="module")
def good_bytes() -> bytes:
    from shrink.deepcomp.container import encode_state

    data, _ = encode_state(_state(), {"fc.weight": 5})
    return data


def _with_crc(body: bytes) -> bytes:
    """Re-seal a modified body with a valid checksum, so the fuzz reaches the parser behind the CRC check."""
    return body + struct.pack("<I", zlib.crc32(body))


def _decode(data: bytes):
    from shrink.deepcomp.container import decode_state

    try:
        return decode_state(data, "fuzz.dcz")
    except FileFormatError:
        return None


def test_round_trip(good_bytes):
    from shrink.deepcomp.container import decode_state

    state = decode_state(good_bytes)
    for key, value in _state().items():
        assert torch.equal(state[key], value)


def test_truncated_and_corrupted_files(good_bytes, tmp_path, user_sees):
    from shrink.deepcomp.io import read_compressed

    for cut in range(0, len(good_bytes), 7):
        with pytest.raises(FileFormatError):
            _decode_strict(good_bytes[:cut])
    path = tmp_path / "model.dcz"
    path.write_bytes(good_bytes[: len(good_bytes) // 2])
    user_sees(
        "Deep Compression files",
        "file truncated to half its size",
        lambda: read_compressed(path),
        FileFormatError,
        "model.dcz",
    )
    flipped = bytearray(good_bytes)
    flipped[40] ^= 0xFF
    path.write_bytes(bytes(flipped))
    user_sees(
        "Deep Compression files",
        "one byte flipped",
        lambda: read_compressed(path),
        FileFormatError,
        "model.dcz",
        "checksum",
    )
    body = bytearray(good_bytes[:-4])
    struct.pack_into("<I", body, 10, 2**32 - 1)  # tensor count
    path.write_bytes(_with_crc(bytes(body)))
    user_sees(
        "Deep Compression files",
        "header declaring 4 billion tensors (valid checksum)",
        lambda: read_compressed(path),
        FileFormatError,
        "model.dcz",
        "more than the file can hold",
    )
    path.write_bytes(b"PK\x03\x04" + bytes(60))
    user_sees(
        "Deep Compression files",
        "a zip file given as .dcz",
        lambda: read_compressed(path),
        FileFormatError,
        "model.dcz",
        "bad magic",
    )


def _decode_strict(data: bytes):
    from shrink.deepcomp.container import decode_state

    return decode_state(data, "fuzz.dcz")


@FUZZ
@given(data=st.data())
def test_fuzz_resealed_mutations_never_crash(good_bytes, data):
    body = bytearray(good_bytes[:-4])
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(8, len(body) - 1))
        body[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        body = body[: data.draw(st.integers(8, len(body)))]
    start = time.process_time()
    _decode(_with_crc(bytes(body)))
    assert time.process_time() - start < 2.0, "a few hundred bytes took seconds to reject"


@FUZZ
@given(blob=st.binary(max_size=300))
def test_fuzz_random_bodies_with_magic_never_crash(blob):
    from shrink.deepcomp.container import MAGIC

    _decode(_with_crc(MAGIC + struct.pack("<HI", 1, 1) + blob))
