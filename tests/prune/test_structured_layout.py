"""The tensors of a channel-pruned model: dense, own storage, original memory format, same per-layer widths as a
uniformly halved architecture — the properties that make a pruned model as fast as any equally-shaped one."""

from __future__ import annotations

import torch
from torch import nn

import shrink
from shrink.pruning.structured import ChannelPruning
from shrink.pruning.structured.slicing import memory_format_of
from shrink.zoo import resnet18


def _pruned(model: nn.Module, x: torch.Tensor, ratio: float = 0.5) -> nn.Module:
    return shrink.prune(model, ChannelPruning(ratio=ratio, importance="l1"), example_inputs=x)


def _tensors(m: nn.Module) -> dict[str, torch.Tensor]:
    return dict(m.named_parameters()) | dict(m.named_buffers())


def test_every_tensor_is_dense_with_its_own_storage():
    model = resnet18(num_classes=10, small_input=True).eval()
    x = torch.randn(2, 3, 32, 32)
    pruned = _pruned(model, x)
    before, after = _tensors(model), _tensors(pruned)
    assert set(before) == set(after)
    sliced = [k for k in after if after[k].shape != before[k].shape]
    assert len(sliced) > 60  # convs, BN weights/biases/running stats
    for k, t in after.items():
        assert t.is_contiguous(), k
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size(), k  # not a view of the old tensor
        assert t.dtype == before[k].dtype, k
    assert all(p.requires_grad for p in pruned.parameters())
    assert all(p.grad is None for p in pruned.parameters())
    assert not pruned.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in pruned.modules())


def test_uniform_half_ratio_halves_every_inner_layer():
    model = resnet18(num_classes=10, small_input=True)
    pruned = _pruned(model, torch.randn(1, 3, 32, 32))
    for (name, a), (_, b) in zip(model.named_modules(), pruned.named_modules(), strict=True):
        if isinstance(a, nn.Conv2d):
            assert b.out_channels == a.out_channels // 2, name
            assert b.in_channels == (3 if a.in_channels == 3 else a.in_channels // 2), name
        if isinstance(a, nn.BatchNorm2d):
            assert b.num_features == a.num_features // 2, name
            assert b.running_var.shape == b.weight.shape == (a.num_features // 2,), name
    assert pruned.fc.in_features == model.fc.in_features // 2
    assert pruned.fc.out_features == 10


def test_channels_last_model_stays_channels_last():
    model = resnet18(num_classes=10, small_input=True).eval()
    x = torch.randn(2, 3, 32, 32)
    plain = _pruned(model, x)
    cl = _pruned(model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last))
    convs = [m for m in cl.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20 and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    # 1x1 kernels are dense in both layouts at once; every 3x3 one must have kept channels-last
    assert sum(not c.weight.is_contiguous() for c in convs) == 17
    with torch.no_grad():
        torch.testing.assert_close(cl(x), plain(x), rtol=1e-4, atol=1e-5)


def test_memory_format_of_views_is_contiguous():
    w = torch.randn(8, 4, 3, 3)
    assert memory_format_of(w) is torch.contiguous_format
    assert memory_format_of(w.to(memory_format=torch.channels_last)) is torch.channels_last
    assert memory_format_of(w[:, ::2]) is torch.contiguous_format  # strided view: a sliced copy is made dense
    assert memory_format_of(torch.randn(2, 3, 4, 5, 6).to(memory_format=torch.channels_last_3d)) is (
        torch.channels_last_3d
    )
