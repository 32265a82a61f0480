"""Channel pruning on every covered model: ratio 0 changes nothing, ratio 0.5 is physically smaller, the pruned
model runs and exports to ONNX (checked in ONNX Runtime against eager)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import shrink
from shrink.data import call_model
from shrink.graph import output_tensors
from shrink.pruning.structured import ChannelPruning


def _model(name):
    from shrink import zoo

    if name == "digits_cnn":
        return zoo.digits_teacher(progress=False), torch.rand(2, 1, 8, 8)
    if name == "digits_student":
        return zoo.digits_student(), torch.rand(2, 1, 8, 8)
    if name == "resnet18":
        return zoo.resnet18(num_classes=10, small_input=True), torch.randn(2, 3, 32, 32)
    if name == "mobilenet_v2":
        return zoo.MobileNetV2(num_classes=10, small_input=True, width_mult=0.5).eval(), torch.randn(2, 3, 32, 32)
    if name == "minilm":
        from shrink.zoo.minilm import minilm_tokenizer, tokenize

        return zoo.load_minilm(), tokenize(minilm_tokenizer(), ["a short sentence", "another, longer sentence here"])
    raise ValueError(name)


def _params(m):
    """Parameters outside embedding tables (the vocabulary table dominates small transformers)."""
    emb = {id(p) for e in m.modules() if isinstance(e, torch.nn.Embedding) for p in e.parameters()}
    return sum(p.numel() for p in m.parameters() if id(p) not in emb)


# shrink's own zoo; transformers architectures are in test_architecture_matrix.py (exactness, save / load, ONNX).
# The two largest graphs (~500 traced ops each) take most of the time: marked slow, still bounded (< 30 s each)
MODELS = [
    "digits_cnn",
    "digits_student",
    "resnet18",
    *(pytest.param(n, marks=pytest.mark.slow) for n in ("mobilenet_v2", "minilm")),
]


@pytest.mark.parametrize("name", MODELS)
def test_channel_pruning_covers_model(name, tmp_path):
    torch.manual_seed(0)
    model, x = _model(name)
    model.eval()
    with torch.no_grad():
        ref = output_tensors(call_model(model, x))

    same = shrink.prune(model, ChannelPruning(ratio=0.0), example_inputs=x)
    with torch.no_grad():
        out0 = output_tensors(call_model(same, x))
    assert max(float((a - b).abs().max()) for a, b in zip(ref, out0, strict=True)) <= 1e-5

    small = shrink.prune(model, ChannelPruning(ratio=0.5, head_ratio=0.25), example_inputs=x)
    assert _params(small) < 0.8 * _params(model)
    with torch.no_grad():
        out = output_tensors(call_model(small, x))
    assert [t.shape for t in out] == [t.shape for t in ref]
    assert all(torch.isfinite(t).all() for t in out if t.is_floating_point())

    path = shrink.export.onnx(small, tmp_path / "pruned.onnx", x)
    ort_out = shrink.export.OnnxModel(path, threads=1)(x)
    ort_first = ort_out[0] if isinstance(ort_out, (list, tuple)) else ort_out
    np.testing.assert_allclose(np.asarray(ort_first), out[0].numpy(), rtol=1e-3, atol=1e-4)
