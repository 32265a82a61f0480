"""The channel dependency graph: which channels are coupled, and what it refuses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shrink.errors import UnsupportedOpError
from shrink.graph import build_dependency_graph
from shrink.zoo import DigitsStudent, resnet18


def _group_with(graph, key):
    found = [g for g in graph.groups if key in g.index]
    assert len(found) == 1, key
    return found[0]


def test_residual_stream_is_one_group():
    m = resnet18(num_classes=10, small_input=True)
    g = build_dependency_graph(m, torch.randn(1, 3, 32, 32))
    stem = _group_with(g, ("stem.0.weight", 0))
    # the stem and both layer1 blocks' second convs write the same residual stream; layer2 reads it
    for key in [
        ("layer1.0.conv2.weight", 0),
        ("layer1.1.bn2.weight", 0),
        ("layer1.0.conv1.weight", 1),
        ("layer2.0.conv1.weight", 1),
        ("layer2.0.downsample.0.weight", 1),
    ]:
        assert key in stem.index
    assert stem.size == 64 and stem.kind == "channels"
    # the inside of a block is its own group
    inner = _group_with(g, ("layer1.0.conv1.weight", 0))
    assert inner is not stem and set(inner.index) == {
        ("layer1.0.conv1.weight", 0),
        ("layer1.0.bn1.weight", 0),
        ("layer1.0.bn1.bias", 0),
        ("layer1.0.bn1.running_mean", 0),
        ("layer1.0.bn1.running_var", 0),
        ("layer1.0.conv2.weight", 1),
    }
    # the classifier's outputs are model outputs: never a group
    assert not any(("fc.weight", 0) in gr.index for gr in g.groups)


def test_flatten_into_linear_expands_each_channel():
    m = DigitsStudent()
    g = build_dependency_graph(m, torch.randn(1, 1, 8, 8))
    last = _group_with(g, ("features.8.weight", 0))  # 16 channels of 2x2 maps -> 64 flattened features
    idx = last.index[("classifier.1.weight", 1)]
    assert last.size == 16 and idx.shape == (64,)
    assert idx.tolist() == [u for u in range(16) for _ in range(4)]


class _Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 6, 1)
        self.dw = nn.Conv2d(10, 10, 3, padding=1, groups=10)
        self.head = nn.Conv2d(10, 2, 1)

    def forward(self, x):
        return self.head(self.dw(torch.cat([self.a(x), self.b(x)], 1)))


def test_concat_and_depthwise_couple_the_right_channels():
    g = build_dependency_graph(_Concat(), torch.randn(1, 3, 8, 8))
    ga, gb = _group_with(g, ("a.weight", 0)), _group_with(g, ("b.weight", 0))
    assert ga.size == 4 and gb.size == 6
    # the depthwise conv's filters follow their input channel; the head reads a's channels then b's
    assert ga.index[("dw.weight", 0)].tolist() == [0, 1, 2, 3] + [-1] * 6
    assert gb.index[("head.weight", 1)].tolist() == [-1] * 4 + list(range(6))


def test_attention_heads_are_units():
    from transformers import BertConfig, BertModel

    m = BertModel(
        BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=48)
    )
    ids = torch.randint(0, 50, (1, 6))
    g = build_dependency_graph(m, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    heads = [gr for gr in g.groups if gr.kind == "heads"]
    assert len(heads) == 1 and heads[0].size == 4
    idx = heads[0].index[("encoder.layer.0.attention.self.query.weight", 0)]
    assert idx.tolist() == [h for h in range(4) for _ in range(8)]  # blocks of head_dim = 8
    assert ("encoder.layer.0.attention.output.dense.weight", 1) in heads[0].index
    ffn = _group_with(g, ("encoder.layer.0.intermediate.dense.weight", 0))
    assert ffn.size == 48 and ("encoder.layer.0.output.dense.weight", 1) in ffn.index
    # the hidden size is the model output: kept
    assert not any(("embeddings.word_embeddings.weight", 1) in gr.index for gr in g.groups)


class _CumsumBlock(nn.Module):
    def forward(self, x):
        return torch.cumsum(x, dim=1)


class _Cumsum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.mix, self.out = nn.Conv2d(3, 8, 1), nn.Sequential(_CumsumBlock()), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.out(self.mix(self.conv(x)))


def test_unsupported_op_is_named_with_its_module_or_skipped():
    with pytest.raises(UnsupportedOpError, match=r"aten\.cumsum.*'mix\.0'"):
        build_dependency_graph(_Cumsum(), torch.randn(1, 3, 4, 4))
    g = build_dependency_graph(_Cumsum(), torch.randn(1, 3, 4, 4), on_unsupported="skip")
    assert any("cumsum" in s for s in g.skipped_ops)
    assert not any(("conv.weight", 0) in gr.index for gr in g.groups)  # its channels are kept
