"""N:M masks: the pattern holds on every group, the kept weights are the largest, bits pack exactly."""

import itertools

import pytest
import torch

from shrink.pruning.nm_pattern import check_nm, from_input_last, input_last, nm_mask, pack_bits, unpack_bits


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4)])
@pytest.mark.parametrize("shape", [(6, 16), (5, 8, 3, 3), (4, 16, 5)])
def test_every_group_holds_exactly_n_of_the_m_largest(n, m, shape):
    w = torch.randn(shape)
    mask = nm_mask(w, n, m)
    assert mask.shape == w.shape and mask.dtype == torch.bool
    groups_w = input_last(w).reshape(-1, m).abs()
    groups_k = input_last(mask).reshape(-1, m)
    assert bool((groups_k.sum(dim=1) == n).all())
    # every kept weight is at least as large as every dropped one, group by group
    kept_min = torch.where(groups_k, groups_w, torch.full_like(groups_w, float("inf"))).min(dim=1).values
    dropped_max = torch.where(~groups_k, groups_w, torch.full_like(groups_w, -1.0)).max(dim=1).values
    assert bool((kept_min >= dropped_max).all())
    assert check_nm(mask, n, m) and check_nm(w * mask, n, m, exact=False)


def test_conv_groups_run_along_input_channels():
    w = torch.zeros(1, 8, 1, 2)
    w[0, :, 0, 0] = torch.tensor([1.0, 9, 2, 8, 7, 3, 6, 4])  # input channels at kernel position (0, 0)
    w[0, :, 0, 1] = torch.arange(8.0, 0, -1)
    mask = nm_mask(w, 2, 4)
    assert mask[0, :, 0, 0].tolist() == [False, True, False, True, True, False, True, False]
    assert mask[0, :, 0, 1].tolist() == [True, True, False, False, True, True, False, False]
    assert torch.equal(from_input_last(input_last(w), w.shape), w)


def test_incompatible_and_invalid_patterns():
    with pytest.raises(ValueError, match="not a multiple of m=4"):
        nm_mask(torch.randn(8, 6), 2, 4)
    with pytest.raises(ValueError, match="0 < n < m"):
        nm_mask(torch.randn(8, 8), 4, 4)
    bad = torch.ones(2, 8, dtype=torch.bool)
    assert not check_nm(bad, 2, 4) and not check_nm(torch.ones(2, 6), 2, 4)


@pytest.mark.parametrize("count", [1, 7, 8, 9, 64, 100])
def test_bits_round_trip(count):
    flags = torch.rand(count) > 0.5
    bits = pack_bits(flags)
    assert bits.dtype == torch.uint8 and bits.numel() == (count + 7) // 8
    assert torch.equal(unpack_bits(bits, count), flags)


def test_four_bit_fields_of_two_four():
    # 2:4 uses 4 bits per group: two groups per byte, most significant bit first
    flags = torch.tensor(list(itertools.chain([1, 0, 0, 1], [0, 1, 1, 0])), dtype=torch.bool)
    assert pack_bits(flags).tolist() == [0b10010110]
