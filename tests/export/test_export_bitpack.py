"""Bit-packed code streams: every width round-trips exactly, at odd sizes, signed and unsigned; bad input is refused."""

from __future__ import annotations

import pytest
import torch

from shrink.export.bitpack import code_range, pack_bits, packed_bytes, unpack_bits


def _dtype(bits: int, signed: bool) -> torch.dtype:
    if bits <= 8:
        return torch.int8 if signed else torch.uint8
    return torch.int16 if signed else torch.int32


@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("signed", [True, False])
def test_random_codes_round_trip_at_every_width(bits: int, signed: bool):
    g = torch.Generator().manual_seed(bits)
    lo, hi = code_range(bits, signed)
    for numel in (0, 1, 3, 7, 8, 9, 1001):
        codes = torch.randint(lo, hi + 1, (numel,), generator=g).to(_dtype(bits, signed))
        codes[: min(numel, 2)] = torch.tensor([lo, hi][: min(numel, 2)])  # both ends of the range
        packed = pack_bits(codes, bits, signed)
        assert packed.dtype == torch.uint8 and packed.numel() == packed_bytes(numel, bits) == -(-numel * bits // 8)
        back = unpack_bits(packed, bits, numel, signed)
        assert back.dtype == codes.dtype and torch.equal(back, codes)


def test_stream_layout_is_dense_most_significant_bit_first():
    assert pack_bits(torch.tensor([1, 2, 3], dtype=torch.uint8), 2).tolist() == [0b01101100]
    assert pack_bits(torch.tensor([-4, 3, 0], dtype=torch.int8), 3).tolist() == [0b00011110, 0b00000000]
    codes = torch.tensor([[-8, 7, 0], [1, -1, 5]], dtype=torch.int8)  # shape is flattened, row-major
    assert torch.equal(unpack_bits(pack_bits(codes, 4), 4, 6).reshape(2, 3), codes)


def test_codes_outside_the_width_and_bad_streams_are_refused():
    with pytest.raises(ValueError, match=r"outside the 4-bit range \[-8, 7\]"):
        pack_bits(torch.tensor([8], dtype=torch.int8), 4)
    with pytest.raises(ValueError, match="outside the 2-bit range"):
        pack_bits(torch.tensor([4], dtype=torch.uint8), 2)
    with pytest.raises(TypeError, match="integer codes"):
        pack_bits(torch.zeros(3), 4)
    with pytest.raises(ValueError, match="bit width"):
        pack_bits(torch.zeros(3, dtype=torch.int8), 0)
    with pytest.raises(ValueError, match="do not hold 5 codes of 3 bits"):
        unpack_bits(torch.zeros(3, dtype=torch.uint8), 3, 5)
    with pytest.raises(ValueError, match="padding bits"):
        unpack_bits(torch.tensor([0b00000001], dtype=torch.uint8), 3, 2)
