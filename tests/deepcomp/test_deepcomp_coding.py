"""Huffman coding (optimality, round trips, invalid streams), relative index coding and k-means weight sharing."""

import itertools
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from shrink.deepcomp import huffman, kmeans_1d, share_weights
from shrink.deepcomp.relindex import from_relative, to_relative
from shrink.errors import FileFormatError


def _brute_force_optimal_cost(freqs):
    """Minimum of Σ f·l over all length vectors satisfying Kraft (≤ 1): an independent definition of optimal."""
    n = len(freqs)
    best = None
    for lengths in itertools.product(range(1, n), repeat=n):
        if sum(2.0**-length for length in lengths) <= 1.0:
            cost = sum(f * length for f, length in zip(freqs, lengths, strict=True))
            best = cost if best is None else min(best, cost)
    return best


def test_huffman_lengths_of_a_textbook_example():
    # CLRS 16.3: a:45 b:13 c:12 d:16 e:9 f:5 -> lengths 1,3,3,3,4,4 (224 bits per 100 symbols)
    lengths = huffman.code_lengths([45, 13, 12, 16, 9, 5])
    assert lengths.tolist() == [1, 3, 3, 3, 4, 4]
    assert huffman.code_lengths([0, 7, 0]).tolist() == [0, 1, 0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=2, max_size=5))
def test_huffman_cost_equals_brute_force_optimum(freqs):
    lengths = huffman.code_lengths(freqs)
    assert int((np.array(freqs) * lengths).sum()) == _brute_force_optimal_cost(freqs)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=2, max_size=300))
def test_huffman_mean_length_within_one_bit_of_entropy(freqs):
    if sum(1 for f in freqs if f) < 2:
        return
    lengths = huffman.code_lengths(freqs)
    h, mean = huffman.entropy_bits(freqs), huffman.mean_code_length(freqs, lengths)
    assert h - 1e-9 <= mean < h + 1
    used = lengths[lengths > 0]
    assert sum(2.0 ** -int(n) for n in used) == pytest.approx(1.0)  # a complete prefix code


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=0, max_size=400), st.integers(21, 40))
def test_huffman_round_trip(symbols, alphabet):
    data = np.array(symbols, dtype=np.int64)
    freqs = np.bincount(data, minlength=alphabet)
    lengths = huffman.code_lengths(freqs)
    encoded, nbits = huffman.encode(data, lengths)
    assert nbits == int((freqs * lengths).sum()) and len(encoded) == (nbits + 7) // 8
    assert huffman.decode(encoded, nbits, lengths, len(data)).tolist() == symbols


def test_huffman_decoder_rejects_bad_streams():
    lengths = huffman.code_lengths([5, 3, 1, 1])
    data, nbits = huffman.encode(np.array([0, 1, 2, 3, 0]), lengths)
    with pytest.raises(FileFormatError, match="left over"):
        huffman.decode(data, nbits, lengths, 4)
    with pytest.raises(FileFormatError, match="ends inside"):
        huffman.decode(data, nbits - 1, lengths, 5)
    with pytest.raises(FileFormatError, match="declares"):
        huffman.decode(data, 8 * len(data) + 1, lengths, 5)
    with pytest.raises(FileFormatError, match="Kraft"):
        huffman.decode(data, nbits, np.array([1, 1, 1, 0]), 2)
    with pytest.raises(FileFormatError, match="invalid code"):  # an incomplete code: '11' is no codeword
        huffman.decode(b"\xff", 2, np.array([1, 2, 0, 0]), 1)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 600), st.floats(0.0, 1.0), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_relative_index_round_trip_with_fillers(numel, density, gap_bits, seed):
    rng = np.random.default_rng(seed)
    nonzero = np.flatnonzero(rng.random(numel) < density)
    symbols = rng.integers(0, 7, len(nonzero))
    max_gap = 2**gap_bits
    gaps, entries = to_relative(nonzero, symbols, numel, max_gap, filler=7)
    assert gaps.min(initial=0) >= 0 and gaps.max(initial=0) < max_gap
    assert numel <= (len(entries) + 1) * max_gap  # the bound a reader checks
    positions, real = from_relative(gaps, entries, numel, filler=7, where="t")
    assert positions.tolist() == nonzero.tolist() and real.tolist() == symbols.tolist()


def test_kmeans_linear_init_and_exact_clusters():
    values = torch.tensor([-1.0, -0.9, -1.1, 0.0, 0.1, -0.1, 2.0, 2.1, 1.9])
    centroids, assignment = kmeans_1d(values, 3)
    assert torch.allclose(centroids, torch.tensor([-1.0, 0.0, 2.0]), atol=1e-6)
    assert assignment.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # linear initialisation: one iteration of nothing moves -> centroids spread over [min, max]
    c0, _ = kmeans_1d(torch.tensor([0.0, 1.0, 2.0, 3.0]), 4, iters=0)
    assert c0.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_centroid_gradient_is_the_sum_of_member_gradients():
    torch.manual_seed(0)
    layer = nn.Linear(12, 6)
    with torch.no_grad():
        layer.weight.mul_((torch.rand(6, 12) > 0.5).float())
    shared = share_weights(layer, bits=2)
    x = torch.randn(5, 12)
    layer(x).pow(2).sum().backward()
    # the same loss through a plain weight holding the shared values
    plain = nn.Linear(12, 6)
    with torch.no_grad():
        plain.weight.copy_(layer.weight)
        plain.bias.copy_(layer.bias)
    plain(x).pow(2).sum().backward()
    expected = torch.zeros(4).index_add_(0, shared.index[shared.keep], plain.weight.grad[shared.keep])
    assert torch.allclose(shared.codebook.grad, expected, atol=1e-5)
    assert len(torch.unique(layer.weight[layer.weight != 0])) <= 4
    assert torch.equal(layer.weight == 0, ~shared.keep)


def _staircase_lengths(k: int) -> np.ndarray:
    """A complete prefix code with lengths 1, 2, ..., k-1, k-1 (the longest code allowed when k = 64)."""
    return np.array([*range(1, k), k - 1], dtype=np.int64)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 64),
    st.lists(st.integers(0, 63), min_size=1, max_size=300),
    st.sampled_from([8, 64, 1 << 18]),
)
def test_huffman_round_trip_long_codes_and_chunk_boundaries(k, raw, chunk):
    # codes up to 63 bits take the binary-search and bit-by-bit window paths; small chunks cross chunk boundaries
    lengths = _staircase_lengths(k)
    symbols = np.array([s % k for s in raw], dtype=np.int64)
    encoded, nbits = huffman.encode(symbols, lengths)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huffman, "_CHUNK_BITS", chunk)
        assert huffman.decode(encoded, nbits, lengths, len(symbols)).tolist() == symbols.tolist()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=0, max_size=64), st.integers(0, 600), st.integers(0, 300))
def test_huffman_decoder_on_random_bytes_returns_or_raises_file_format_error(raw, nbits, count):
    lengths = huffman.code_lengths([50, 20, 10, 5, 5, 3, 1])
    try:
        out = huffman.decode(bytes(raw), nbits, lengths, count)
    except FileFormatError:
        return
    assert len(out) == count and ((out >= 0) & (out < 7)).all()
    encoded, again = huffman.encode(out, lengths)  # whatever decodes must re-encode to the same bits
    assert again == nbits and encoded[: nbits // 8] == bytes(raw)[: nbits // 8]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=2, max_size=200), st.data())
def test_huffman_truncated_streams_are_rejected(symbols, data):
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=10))
    encoded, nbits = huffman.encode(np.array(symbols), lengths)
    cut = data.draw(st.integers(0, nbits - 1))
    with pytest.raises(FileFormatError):
        huffman.decode(encoded, cut, lengths, len(symbols))


def test_huffman_decodes_a_hundred_thousand_symbols():
    rng = np.random.default_rng(0)
    symbols = np.minimum(rng.geometric(0.3, 100_000) - 1, 31)  # skewed, like cluster indices and gaps
    freqs = np.bincount(symbols, minlength=32)
    lengths = huffman.code_lengths(freqs)
    encoded, nbits = huffman.encode(symbols, lengths)
    assert huffman.mean_code_length(freqs, lengths) < huffman.entropy_bits(freqs) + 1
    start = time.perf_counter()
    decoded = huffman.decode(encoded, nbits, lengths, len(symbols))
    assert time.perf_counter() - start < 20.0  # a sanity bound only; speed is measured in the compress benchmark
    assert np.array_equal(decoded, symbols)
