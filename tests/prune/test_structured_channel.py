"""Channel pruning behaviour: coupled decisions, round_to, criteria, heads, global scope, save/load, layer removal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import shrink
from shrink.errors import ConfigError, DataError
from shrink.graph import build_dependency_graph
from shrink.pruning.structured import ChannelPruning, LayerRemoval, SkippedLayer, choose_units
from shrink.pruning.structured.importance import l1_importance
from shrink.zoo import digits_data, digits_student, resnet18


def _resnet():
    return resnet18(num_classes=10, small_input=True)


def test_residual_pair_keeps_identical_channel_sets():
    m = _resnet()
    g = build_dependency_graph(m, torch.randn(1, 3, 32, 32))
    tensors = dict(m.named_parameters()) | dict(m.named_buffers())
    scores = [l1_importance(gr, tensors) for gr in g.groups]
    cut = choose_units(g.groups, scores, 0.5, "uniform")
    removed = {int(r) for gr, units in zip(g.groups, cut, strict=True) for r in gr.roots[units]}
    keep = g.keep_indices(removed)
    stream = [
        ("stem.0.weight", 0),
        ("stem.1.weight", 0),
        ("layer1.0.bn2.weight", 0),
        ("layer1.1.conv2.weight", 0),
        ("layer1.1.conv1.weight", 1),
        ("layer2.0.downsample.0.weight", 1),
    ]
    first = keep[stream[0]].tolist()
    assert len(first) == 32
    assert all(keep[k].tolist() == first for k in stream)
    # the block's own inner channels are decided separately
    assert keep[("layer1.0.conv1.weight", 0)].tolist() != first


def test_round_to_and_smaller_resnet():
    m = _resnet()
    x = torch.randn(2, 3, 32, 32)
    p = shrink.prune(m, ChannelPruning(ratio=0.3, round_to=8), example_inputs=x)
    convs = [c for c in p.modules() if isinstance(c, nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 for c in convs)
    assert convs[0].out_channels == 48  # 64 * 0.7 = 44.8 -> 45 -> nearest multiple of 8
    assert sum(t.numel() for t in p.parameters()) < 0.6 * sum(t.numel() for t in m.parameters())
    assert p(x).shape == (2, 10)


def test_bn_scale_removes_the_smallest_gammas():
    m = digits_student()
    with torch.no_grad():
        m.features[1].weight.copy_(torch.linspace(1.0, 2.0, 8))
        m.features[1].weight[[2, 5]] = 1e-3
    p = shrink.prune(
        m,
        ChannelPruning(ratio=0.25, importance="bn_scale", selector={"include": ["features.0", "features.3"]}),
        example_inputs=torch.rand(1, 1, 8, 8),
    )
    kept = p.features[1].weight.detach()
    assert kept.numel() == 6 and float(kept.min()) > 0.5


@pytest.mark.parametrize("criterion", ["l2", "taylor"])
def test_data_criteria_prune_digits_and_keep_accuracy(criterion, digits_teacher):
    data = digits_data()
    cfg = ChannelPruning(ratio=0.25, importance=criterion, batches=3)
    p = shrink.prune(digits_teacher, cfg, example_inputs=data.example_inputs, train=data.train)
    x, y = next(iter(data.test))
    acc = float((p(x).argmax(1) == y).float().mean())
    assert p.features[0].out_channels == 24 and p.classifier[1].in_features == 192
    # without fine-tuning; LASSO refits the next layers by least squares and keeps most of the accuracy
    assert acc > {"l2": 0.15, "taylor": 0.5}[criterion], acc


def test_lasso_reconstruction_beats_plain_slicing(digits_teacher):
    data = digits_data()
    x, y = next(iter(data.test))
    ref = digits_teacher(x).detach()
    errs, acc = {}, {}
    for crit in ("l1", "lasso"):
        p = shrink.prune(
            digits_teacher,
            ChannelPruning(ratio=0.5, importance=crit, batches=8),
            example_inputs=x[:1],
            train=data.train,
        )
        errs[crit] = float((p(x) - ref).pow(2).mean())
        acc[crit] = float((p(x).argmax(1) == y).float().mean())
    assert errs["lasso"] < 0.5 * errs["l1"]
    # without fine-tuning: the least-squares refit of the next layers keeps the accuracy (measured 99.2%)
    assert acc["lasso"] > 0.95 > acc["l1"]


def test_taylor_needs_data():
    with pytest.raises(DataError, match="taylor"):
        shrink.prune(
            digits_student(), ChannelPruning(ratio=0.5, importance="taylor"), example_inputs=torch.rand(1, 1, 8, 8)
        )
    with pytest.raises(ConfigError):
        ChannelPruning(ratio=0.5, importance="random")


def test_global_scope_prunes_groups_unevenly():
    m = digits_student()
    with torch.no_grad():
        m.features[3].weight.mul_(100)  # the second conv's filters become far more important
    p = shrink.prune(m, ChannelPruning(ratio=0.4, scope="global"), example_inputs=torch.rand(1, 1, 8, 8))
    assert p.features[3].out_channels > p.features[0].out_channels


def _bert():
    from transformers import BertConfig, BertModel

    m = BertModel(
        BertConfig(vocab_size=50, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, intermediate_size=64)
    ).eval()
    ids = torch.randint(0, 50, (2, 5))
    return m, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_heads_and_ffn_and_save_load(tmp_path):
    m, x = _bert()
    p = shrink.prune(m, ChannelPruning(ratio=0.25, head_ratio=2 / 6), example_inputs=x)
    att = p.encoder.layer[0].attention.self
    assert att.num_attention_heads == 4 and att.all_head_size == 32 and att.query.out_features == 32
    assert p.encoder.layer[1].intermediate.dense.out_features == 48
    path = shrink.save(p, tmp_path / "bert.shrink")
    back = shrink.load(path, lambda: _bert()[0])
    assert back.encoder.layer[1].attention.self.num_attention_heads == 4
    torch.testing.assert_close(back(**x).last_hidden_state, p(**x).last_hidden_state, rtol=1e-5, atol=1e-5)


def test_heads_only():
    m, x = _bert()
    p = shrink.prune(m, ChannelPruning(ratio=0.5, prune_channels=False), example_inputs=x)
    assert p.encoder.layer[0].attention.self.num_attention_heads == 3
    assert p.encoder.layer[0].intermediate.dense.out_features == 64


def test_pruned_cnn_save_load(tmp_path):
    m = _resnet()
    x = torch.randn(1, 3, 32, 32)
    p = shrink.prune(m, ChannelPruning(ratio=0.5, round_to=8), example_inputs=x)
    back = shrink.load(shrink.save(p, tmp_path / "r.shrink"), _resnet)
    assert back.layer3[0].conv1.out_channels == p.layer3[0].conv1.out_channels == 128
    torch.testing.assert_close(back(x), p(x))


def test_layer_removal_by_name_and_by_count(tmp_path):
    m = _resnet()
    x = torch.randn(2, 3, 32, 32)
    named = shrink.prune(m, LayerRemoval(layers=("layer2.1", "layer3.1")), example_inputs=x)
    assert isinstance(named.layer2[1], SkippedLayer) and named(x).shape == (2, 10)
    auto = shrink.prune(m, LayerRemoval(count=3), example_inputs=x)
    removed = [n for n, mod in auto.named_modules() if isinstance(mod, SkippedLayer)]
    assert len(removed) == 3 and all(m.get_submodule(n).downsample is None for n in removed)  # shape-preserving
    back = shrink.load(shrink.save(auto, tmp_path / "a.shrink"), _resnet)
    torch.testing.assert_close(back(x), auto(x))
    with pytest.raises(ConfigError):
        shrink.prune(m, LayerRemoval(), example_inputs=x)


def test_transformer_layer_removal():
    m, x = _bert()
    p = shrink.prune(m, LayerRemoval(count=1), example_inputs=x)
    assert sum(isinstance(mod, SkippedLayer) for mod in p.modules()) == 1
    assert p(**x).last_hidden_state.shape == (2, 5, 48)
    assert np.isfinite(p(**x).last_hidden_state.detach().numpy()).all()


def test_a_ratio_that_removes_nothing_warns_and_leaves_the_model_whole():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3)).eval()
    with pytest.warns(
        UserWarning, match=r"removed nothing, the model is unchanged: no whole unit of its 1 prunable group"
    ):
        pruned = shrink.prune(model, ChannelPruning(ratio=0.1), example_inputs=torch.randn(2, 8))
    assert pruned[0].out_features == 4
    notes: list[str] = []
    with pytest.warns(UserWarning) as caught:
        shrink.prune(model, ChannelPruning(ratio=0.1), example_inputs=torch.randn(2, 8), notes=notes)
    assert caught[0].filename == __file__ and any("removed nothing" in n for n in notes)  # the user's line, the report
