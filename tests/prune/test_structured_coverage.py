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


def _hf(name):
    import transformers as tr

    ids = torch.randint(0, 64, (2, 7))
    text = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    image = torch.randn(2, 3, 32, 32)
    if name == "bert":
        return tr.BertModel(
            tr.BertConfig(
                vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
            )
        ), text
    if name == "gpt2":
        cfg = tr.GPT2Config(
            vocab_size=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0, use_cache=False
        )
        return tr.GPT2Model(cfg), {**text, "position_ids": torch.arange(7).expand(2, 7)}
    if name == "vit":
        return tr.ViTModel(
            tr.ViTConfig(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                image_size=32,
                patch_size=8,
            )
        ), image
    if name == "hf_resnet":
        return tr.ResNetModel(tr.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1])), image
    return tr.MobileNetV2Model(tr.MobileNetV2Config(image_size=32, depth_multiplier=0.35)), image


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
    return _hf(name)


def _params(m):
    """Parameters outside embedding tables (the vocabulary table dominates small transformers)."""
    emb = {id(p) for e in m.modules() if isinstance(e, torch.nn.Embedding) for p in e.parameters()}
    return sum(p.numel() for p in m.parameters() if id(p) not in emb)


class _Positional(torch.nn.Module):
    """transformers models exported with positional inputs (the TorchScript ONNX exporter passes kwargs badly)."""

    def __init__(self, model, example):
        super().__init__()
        self.model, self.keys = model, list(example)

    def forward(self, *tensors):
        return tuple(output_tensors(self.model(**dict(zip(self.keys, tensors, strict=True)))))


# the three largest graphs (~500 traced ops each) take most of the time: marked slow, still bounded (< 30 s each)
MODELS = [
    "digits_cnn",
    "digits_student",
    "resnet18",
    "bert",
    "vit",
    "gpt2",
    "hf_resnet",
    *(pytest.param(n, marks=pytest.mark.slow) for n in ("mobilenet_v2", "minilm", "hf_mobilenet_v2")),
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

    positional = isinstance(x, dict) and name != "minilm"
    exported, args = (_Positional(small, x), tuple(x.values())) if positional else (small, x)
    path = shrink.export.onnx(exported, tmp_path / "pruned.onnx", args)
    ort_out = shrink.export.OnnxModel(path, threads=1)(args)
    ort_first = ort_out[0] if isinstance(ort_out, (list, tuple)) else ort_out
    np.testing.assert_allclose(np.asarray(ort_first), out[0].numpy(), rtol=1e-3, atol=1e-4)
