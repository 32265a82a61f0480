"""A transformers image classifier (ViT: its forward reads ``patch_embeddings.projection.weight.dtype``, and it returns
an ``ImageClassifierOutput``) through static int8, QAT and the cross-entropy training configs."""

import pytest
import torch
from torch import nn

import shrink
from shrink.pruning import IterativePruning
from shrink.quant import QAT, Int8Static
from shrink.quant.layers.modules import QuantConv2d
from shrink.quant.layers.qat_modules import QatConv2d
from shrink.train import FineTune

transformers = pytest.importorskip("transformers")


def _vit():
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    return transformers.ViTForImageClassification(config).eval()


def _batches():
    torch.manual_seed(1)
    return [(torch.randn(8, 3, 16, 16), torch.randint(0, 2, (8,))) for _ in range(2)]


def test_static_int8_vit_runs_and_its_quant_conv_exposes_the_dequantized_weight():
    model, batches = _vit(), _batches()
    q = shrink.quantize(model, Int8Static(), calibration=[x for x, _ in batches])
    conv = q.vit.embeddings.patch_embeddings.projection
    assert isinstance(conv, QuantConv2d)
    assert torch.equal(conv.weight, conv.dequantized_weight()) and conv.weight.dtype == torch.float32
    assert "weight" not in dict(conv.named_parameters())
    with torch.no_grad():
        ref, out = model(batches[0][0]).logits, q(batches[0][0]).logits
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=0.1)


def test_qat_vit_trains_and_its_training_conv_exposes_the_float_weight():
    model, batches = _vit(), _batches()
    q = shrink.quantize(model, QAT(epochs=1), train=batches, calibration=[x for x, _ in batches], progress=False)
    assert isinstance(q.vit.embeddings.patch_embeddings.projection, QuantConv2d)  # converted after training
    assert q(batches[0][0]).logits.shape == (8, 2)
    qat = QatConv2d(nn.Conv2d(3, 4, 3), None, relu=False, weight_bits=8, act_bits=8, act_signed=False)
    assert qat.weight is qat.layer.weight


@pytest.mark.parametrize(
    "config", [FineTune(epochs=2, lr=1e-2), IterativePruning(sparsity=0.5, cycles=1, epochs_per_cycle=2, lr=1e-2)]
)
def test_cross_entropy_training_reads_the_logits_of_a_model_output(config):
    model, batches = _vit(), _batches()
    start = model.classifier.weight.clone()
    verb = shrink.finetune if isinstance(config, FineTune) else shrink.prune
    out = verb(model, config, train=batches, progress=False)
    assert not torch.equal(out.classifier.weight, start)
    assert torch.equal(model.classifier.weight, start)
