"""Grouped convolutions (groups > 1, not depthwise): a group's input and output channels are one unit, so pruning
removes whole groups — the producing layer's filters feeding that group go with it — and ``groups`` shrinks."""

from __future__ import annotations

import torch
from torch import nn

import shrink
from shrink.graph import build_dependency_graph
from shrink.pruning.structured import ChannelPruning


class _Grouped(nn.Module):
    """conv 3->16, BN, grouped conv 16->24 in 4 groups (4 in / 6 out per group), BN, 1x1 conv 24->8, head."""

    def __init__(self, multiplier_dw: bool = False) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        groups = 16 if multiplier_dw else 4  # depthwise with channel multiplier 24/16 is not integral: use 32
        out = 32 if multiplier_dw else 24
        self.gconv, self.bn2 = nn.Conv2d(16, out, 3, padding=1, groups=groups), nn.BatchNorm2d(out)
        self.conv3 = nn.Conv2d(out, 8, 1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.gconv(x)))
        return self.fc(self.conv3(x).mean((2, 3)))


def _model(**kw) -> nn.Module:
    torch.manual_seed(0)
    m = _Grouped(**kw)
    for bn in (m.bn1, m.bn2):
        nn.init.uniform_(bn.running_var, 0.5, 2.0)
        nn.init.normal_(bn.running_mean)
    return m.eval()


def test_graph_couples_each_group_input_and_output_into_one_unit():
    g = build_dependency_graph(_model(), torch.randn(1, 3, 8, 8))
    (grp,) = [gr for gr in g.groups if ("gconv.weight", 0) in gr.index]
    assert grp.size == 4
    assert grp.index[("gconv.weight", 0)].tolist() == [u for u in range(4) for _ in range(6)]
    assert grp.index[("conv1.weight", 0)].tolist() == [u for u in range(4) for _ in range(4)]
    assert grp.index[("bn1.running_mean", 0)].tolist() == grp.index[("conv1.weight", 0)].tolist()
    assert grp.index[("conv3.weight", 1)].tolist() == grp.index[("gconv.weight", 0)].tolist()
    assert ("gconv.weight", 1) not in grp.index  # per-group input width never changes


def test_half_ratio_removes_whole_groups_and_matches_the_kept_slices():
    m, x = _model(), torch.randn(2, 3, 8, 8)
    p = shrink.prune(m, ChannelPruning(ratio=0.5, importance="l1"), example_inputs=x)
    assert (p.gconv.groups, p.gconv.in_channels, p.gconv.out_channels) == (2, 8, 12)
    assert p.conv1.out_channels == 8 and p.bn1.num_features == 8 and p.conv3.in_channels == 12
    # find the kept groups by their filters, then check the producer kept exactly those groups' input channels
    chunks = m.gconv.weight.detach().split(6)
    kept = [i for i, c in enumerate(chunks) if any(torch.equal(c, k) for k in p.gconv.weight.detach().split(6))]
    assert len(kept) == 2
    rows = torch.cat([torch.arange(g * 4, g * 4 + 4) for g in kept])
    torch.testing.assert_close(p.conv1.weight, m.conv1.weight[rows])
    # a kept group sees only its own input channels: its outputs equal the original's, position for position
    cols = torch.cat([torch.arange(g * 6, g * 6 + 6) for g in kept])
    outs = {}
    for name, model in (("orig", m), ("pruned", p)):
        model.bn2.register_forward_hook(lambda mod, i, o, name=name: outs.__setitem__(name, o))
        with torch.no_grad():
            model(x)
    assert outs["pruned"].shape == (2, 12, 8, 8)
    torch.testing.assert_close(outs["pruned"], outs["orig"][:, cols], rtol=1e-5, atol=1e-6)


def test_ratio_zero_is_exact_and_depthwise_multiplier_prunes(tmp_path):
    x = torch.randn(2, 3, 8, 8)
    for kw in ({}, {"multiplier_dw": True}):
        m = _model(**kw)
        same = shrink.prune(m, ChannelPruning(ratio=0.0), example_inputs=x)
        with torch.no_grad():
            torch.testing.assert_close(same(x), m(x), rtol=1e-5, atol=1e-5)
    m = _model(multiplier_dw=True)
    p = shrink.prune(m, ChannelPruning(ratio=0.5), example_inputs=x)
    assert (p.gconv.groups, p.gconv.in_channels, p.gconv.out_channels) == (8, 8, 16)
    back = shrink.load(shrink.save(p, tmp_path / "g.shrink"), lambda: _Grouped(multiplier_dw=True))
    assert back.gconv.groups == 8
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(x), p(x))
