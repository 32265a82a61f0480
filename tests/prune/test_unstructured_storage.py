"""Pruned models on disk: shrink.save stores sparse weights as bitmask + values, so a 90%-sparse file is small,
and shrink.load rebuilds a model with equal outputs."""

import os

import torch
from torch import nn

import shrink
from shrink.pruning import IterativePruning, MagnitudePruning, get_mask


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def test_ninety_percent_sparse_file_is_at_most_a_fifth_of_dense(tmp_path):
    dense = _mlp()
    pruned = shrink.prune(dense, MagnitudePruning(sparsity=0.9))
    dense_bytes = os.path.getsize(shrink.save(dense, tmp_path / "dense.shrink"))
    sparse_bytes = os.path.getsize(shrink.save(pruned, tmp_path / "sparse.shrink"))
    assert sparse_bytes <= 0.20 * dense_bytes
    # bound from the format: 1 bit per weight + 4 bytes per kept value + dense biases + header
    weights = sum(m.weight.numel() for m in pruned.modules() if isinstance(m, nn.Linear))
    assert sparse_bytes < weights / 8 + 0.1 * weights * 4 + 2 * (256 + 256 + 10) * 4 + 8192


def test_save_load_round_trip_of_a_masked_model(tmp_path):
    pruned = shrink.prune(_mlp(), MagnitudePruning(sparsity=0.8, scope="layer"))
    assert get_mask(pruned[0]) is not None  # still parametrized when saved
    path = shrink.save(pruned, tmp_path / "m.shrink")
    loaded = shrink.load(path, _mlp)
    x = torch.randn(4, 128)
    assert torch.equal(loaded(x), pruned(x))
    assert int((loaded[2].weight == 0).sum()) == round(0.8 * loaded[2].weight.numel())
    assert get_mask(pruned[0]) is not None  # saving did not bake the user's masks


def test_iterative_pruned_conv_round_trip(tmp_path):
    def factory() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4, 3))

    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 3, 4, 4, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(2)]
    pruned = shrink.prune(
        factory(), IterativePruning(sparsity=0.9, cycles=2, epochs_per_cycle=1), train=data, progress=False
    )
    loaded = shrink.load(shrink.save(pruned, tmp_path / "c.shrink"), factory)
    x = torch.randn(2, 3, 4, 4)
    assert torch.allclose(loaded(x), pruned(x), atol=1e-6)
