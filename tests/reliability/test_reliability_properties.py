"""Property-based tests (hypothesis): quantize/dequantize bounds, packing round-trips, mask invariants, Huffman and
relative-index round-trips."""

from __future__ import annotations

import copy
import math
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

N = int(os.environ.get("SHRINK_FUZZ_EXAMPLES", "60"))
PROPS = settings(max_examples=min(N, 2000), deadline=None, suppress_health_check=list(HealthCheck), database=None)

FLOATS = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


def tensors(min_size: int = 1, max_size: int = 64):
    return st.lists(FLOATS, min_size=min_size, max_size=max_size).map(lambda v: torch.tensor(v, dtype=torch.float32))


@PROPS
@given(x=tensors(), bits=st.sampled_from([2, 3, 4, 5, 6, 7, 8]), symmetric=st.booleans(), signed=st.booleans())
def test_quantize_codes_in_range_and_error_within_half_step(x, bits, symmetric, signed):
    from shrink.quant.numerics.qparams import dequantize, qparams_for_tensor, quantize

    qp = qparams_for_tensor(x, bits, symmetric=symmetric, signed=signed)
    q = quantize(x, qp)
    assert q.dtype == qp.dtype
    assert int(q.min()) >= qp.qmin and int(q.max()) <= qp.qmax
    err = (dequantize(q, qp) - x).abs()
    assert bool((err <= qp.scale / 2 * (1 + 1e-5) + 1e-6 * x.abs().max()).all())
    zero = torch.zeros(1)
    assert float(dequantize(quantize(zero, qp), qp)[0]) == 0.0  # real zero is exact (padding, ReLU, masks)


@PROPS
@given(rows=st.integers(1, 6), cols=st.integers(1, 8), bits=st.sampled_from([4, 8]), seed=st.integers(0, 2**16))
def test_per_channel_quantization_bounds(rows, cols, bits, seed):
    from shrink.quant.numerics.qparams import dequantize, qparams_for_tensor, quantize

    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * 10
    qp = qparams_for_tensor(x, bits, symmetric=True, axis=0)
    assert qp.scale.shape == (rows,)
    err = (dequantize(quantize(x, qp), qp) - x).abs()
    assert bool((err <= qp.scale.unsqueeze(1) / 2 * (1 + 1e-5) + 1e-6 * x.abs()).all())


def test_quantization_refuses_nan():
    from shrink.errors import DataError
    from shrink.quant.numerics.qparams import qparams_for_tensor

    with pytest.raises(DataError, match="NaN or Inf"):
        qparams_for_tensor(torch.tensor([1.0, float("nan")]))


@PROPS
@given(codes=st.lists(st.integers(-8, 7), min_size=0, max_size=64).filter(lambda v: len(v) % 2 == 0))
def test_int4_packing_round_trip(codes):
    from shrink.quant.layers.packed import pack_int4, unpack_int4

    q = torch.tensor(codes, dtype=torch.int8).reshape(1, -1)
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.numel() == len(codes) // 2
    assert torch.equal(unpack_int4(packed), q)


@PROPS
@given(values=st.lists(FLOATS, min_size=1, max_size=100))
def test_sign_and_bit_packing_round_trip(values):
    from shrink.pruning.nm_pattern import pack_bits, unpack_bits
    from shrink.quant.layers.binary_layers import pack_signs, unpack_signs

    w = torch.tensor(values)
    signs = unpack_signs(pack_signs(w), tuple(w.shape))
    assert torch.equal(signs, torch.where(w >= 0, 1.0, -1.0))
    flags = w > 0
    packed = pack_bits(flags)
    assert packed.numel() == math.ceil(len(values) / 8)
    assert torch.equal(unpack_bits(packed, len(values)), flags)


@PROPS
@given(
    shape=st.sampled_from([(4, 4), (8, 3), (6, 2, 3, 3)]),
    sparsity=st.floats(0.0, 0.95),
    scope=st.sampled_from(["layer", "global"]),
    seed=st.integers(0, 2**16),
)
def test_magnitude_mask_invariants(shape, sparsity, scope, seed):
    from shrink.pruning.magnitude import MagnitudePruning, magnitude_masks
    from shrink.pruning.masks import apply_mask, get_mask, make_permanent

    torch.manual_seed(seed)
    layer = nn.Conv2d(shape[1], shape[0], 3) if len(shape) == 4 else nn.Linear(shape[1], shape[0])
    original = layer.weight.detach().clone()
    mask = magnitude_masks({"l": layer}, MagnitudePruning(sparsity=sparsity, scope=scope))["l"]
    numel = original.numel()
    assert int((~mask).sum()) == round(sparsity * numel)  # exactly the requested count
    if (~mask).any() and mask.any():  # every pruned weight is no larger than every kept one
        assert float(original.abs()[~mask].max()) <= float(original.abs()[mask].min())
    apply_mask(layer, mask)
    assert torch.equal(layer.weight == 0, ~mask | (original == 0))
    twin = copy.deepcopy(layer)  # masks survive deepcopy and state_dict
    assert torch.equal(get_mask(twin), mask)
    assert any(k.endswith("mask") for k in layer.state_dict())
    make_permanent(twin)
    assert get_mask(twin) is None and torch.equal(twin.weight == 0, layer.weight == 0)
    assert get_mask(layer) is not None  # baking the copy leaves the original masked


@PROPS
@given(symbols=st.lists(st.integers(0, 40), min_size=1, max_size=300))
def test_huffman_round_trip_and_optimality(symbols):
    from shrink.deepcomp import huffman

    s = np.array(symbols)
    freqs = np.bincount(s, minlength=41)
    lengths = huffman.code_lengths(freqs)
    huffman.check_lengths(lengths, "test")  # a prefix code (Kraft)
    data, nbits = huffman.encode(s, lengths)
    assert nbits == int((freqs * lengths).sum())
    assert np.array_equal(huffman.decode(data, nbits, lengths, len(s)), s)
    h = huffman.entropy_bits(freqs)
    assert h - 1e-9 <= huffman.mean_code_length(freqs, lengths) < h + 1 + 1e-9


@PROPS
@given(
    numel=st.integers(1, 400),
    density=st.floats(0.0, 1.0),
    max_gap=st.sampled_from([1, 2, 4, 8, 32]),
    seed=st.integers(0, 2**16),
)
def test_relative_index_round_trip(numel, density, max_gap, seed):
    from shrink.deepcomp.relindex import from_relative, to_relative

    rng = np.random.default_rng(seed)
    nonzero = np.flatnonzero(rng.random(numel) < density)
    symbols = rng.integers(0, 5, len(nonzero))
    gaps, entries = to_relative(nonzero, symbols, numel, max_gap, filler=5)
    assert numel <= (len(entries) + 1) * max_gap  # the bound a reader uses to refuse oversized claims
    assert gaps.min(initial=0) >= 0 and gaps.max(initial=0) < max_gap
    positions, real = from_relative(gaps, entries, numel, filler=5, where="test")
    assert np.array_equal(positions, nonzero) and np.array_equal(real, symbols)
