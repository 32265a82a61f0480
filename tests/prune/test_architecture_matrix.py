"""Bring your own model: transformers architectures built from small configs, re-initialised so that a slicing
mistake shows (the default 0.02 init and 1e-6 layer scales hide them), each checked three ways:

* exact equivalence: units are zeroed first in every tensor of their group (filters, BatchNorm scales, the next
  layer's input slices), so removing them must not change the output (groups a LayerNorm / RMSNorm normalizes over
  are left out of this check: removing a channel changes the statistics such a norm computes, zero or not);
* ``shrink.save`` then ``shrink.load`` on the factory's fresh model gives bit-identical outputs;
* the pruned model exports to ONNX and ONNX Runtime reproduces it.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import shrink
from shrink.data import call_model
from shrink.export.onnx import OnnxModel
from shrink.graph import build_dependency_graph, output_tensors
from shrink.pruning.structured import ChannelPruning
from shrink.pruning.structured.channel import apply_removal, prunable_groups

CONFIG = ChannelPruning(ratio=0.3, head_ratio=0.34, scope="uniform")
#: Llama's rotary embedding slices each head in halves, which the generic graph keeps whole (on_unsupported='skip':
#: its MLP units prune, its heads stay); shrink.llm.prune_llama prunes Llama heads with the rotary layout in mind
CONFIGS = {"llama": CONFIG.model_copy(update={"on_unsupported": "skip"})}
#: units zeroed per group before pruning: more than the pruner removes, so every removed unit is a zeroed one
ZEROED = 0.5


SMALL_TRANSFORMER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}


def _image_models() -> dict:
    import transformers as tr

    return {
        "resnet": lambda: tr.ResNetModel(tr.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1])),
        "convnext": lambda: tr.ConvNextModel(tr.ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2)),
        "efficientnet": lambda: tr.EfficientNetModel(
            tr.EfficientNetConfig(image_size=32, width_coefficient=0.25, depth_coefficient=0.2, hidden_dim=320)
        ),
        "mobilenet_v2": lambda: tr.MobileNetV2Model(tr.MobileNetV2Config(image_size=32, depth_multiplier=0.35)),
        "regnet": lambda: tr.RegNetModel(
            tr.RegNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], groups_width=8)
        ),
        "vit": lambda: tr.ViTModel(tr.ViTConfig(**SMALL_TRANSFORMER, image_size=32, patch_size=8)),
        "deit": lambda: tr.DeiTModel(tr.DeiTConfig(**SMALL_TRANSFORMER, image_size=32, patch_size=8)),
        "swin": lambda: tr.SwinModel(
            tr.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4)
        ),
    }


def _text_models() -> dict:
    import transformers as tr

    small = SMALL_TRANSFORMER
    return {
        "bert": lambda: tr.BertModel(tr.BertConfig(vocab_size=64, **small)),
        "roberta": lambda: tr.RobertaModel(tr.RobertaConfig(vocab_size=64, pad_token_id=1, **small)),
        "distilbert": lambda: tr.DistilBertModel(
            tr.DistilBertConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, hidden_dim=64)
        ),
        "gpt2": lambda: tr.GPT2Model(tr.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, use_cache=False)),
        "llama": lambda: tr.LlamaModel(
            tr.LlamaConfig(vocab_size=64, num_key_value_heads=2, max_position_embeddings=64, use_cache=False, **small)
        ),
    }


ARCHITECTURES = ["resnet", "convnext", "efficientnet", "mobilenet_v2", "regnet", "vit", "deit", "swin", "bert",
                 "roberta", "distilbert", "gpt2", "llama"]  # fmt: skip


def _factory(name: str):  # noqa: ANN202
    models = {**_image_models(), **_text_models()}

    def build() -> nn.Module:
        torch.manual_seed(0)
        model = models[name]().eval()
        _reinitialise(model)
        return model

    return build


@torch.no_grad()
def _reinitialise(model: nn.Module) -> None:
    """Weights of unit-scale outputs (normal, std 1/sqrt(fan-in)); every 1-D tensor (norm scales, biases, layer scales)
    uniform in [0.5, 1.5]; BatchNorm statistics of a normal distribution with a spread of means."""
    g = torch.Generator().manual_seed(1)
    for p in model.parameters():
        if p.dim() >= 2:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
        else:
            p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _inputs(name: str) -> object:
    if name in _image_models():
        return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    ids = torch.randint(2, 64, (2, 7), generator=torch.Generator().manual_seed(2))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _normalized_over(model: nn.Module, group) -> bool:  # noqa: ANN001
    """Whether a norm that computes statistics over the channels (LayerNorm, RMSNorm, GroupNorm) holds the group."""
    for module in group.modules:
        m = model.get_submodule(module) if module else model
        if "Norm" in type(m).__name__ and not isinstance(m, nn.modules.batchnorm._BatchNorm):
            return True
    return False


@torch.no_grad()
def _zero_and_remove(model: nn.Module, x: object, config: ChannelPruning) -> tuple[nn.Module, int]:
    """Zero, in every prunable group no LayerNorm normalizes, the first ZEROED share of its units across all of the
    group's tensors, then remove exactly those units with the pruner's own slicing; returns the zeroed model's
    pruned copy and how many groups it lost units in."""
    graph = build_dependency_graph(model, x, config.on_unsupported)
    params = dict(model.named_parameters())
    groups = [g for g in prunable_groups(model, graph, config) if not _normalized_over(model, g)]
    removed: set[int] = set()
    for group in groups:
        chosen = np.arange(int(math.ceil(ZEROED * group.size)))
        removed.update(int(r) for r in group.roots[chosen])
        for (fqn, dim), index in group.index.items():
            positions = torch.from_numpy(np.nonzero(np.isin(index, chosen) & (index >= 0))[0])
            if fqn in params and len(positions):
                params[fqn].index_fill_(dim, positions, 0.0)
    pruned = copy.deepcopy(model)
    apply_removal(pruned, graph, removed)
    return pruned, len(groups)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _outputs(model: nn.Module, x: object) -> list[torch.Tensor]:
    with torch.no_grad():
        return [t for t in output_tensors(call_model(model, x)) if t.is_floating_point()]


def _close(a: list[torch.Tensor], b: list[torch.Tensor], tol: float) -> bool:
    return len(a) == len(b) and all(
        x.shape == y.shape and float((x - y).abs().max()) <= tol * max(1.0, float(y.abs().max()))
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_architecture_prunes_exactly_round_trips_and_runs_in_onnx_runtime(name, tmp_path):
    factory, x, config = _factory(name), _inputs(name), CONFIGS.get(name, CONFIG)
    model = factory()
    exact, touched = _zero_and_remove(model, x, config)
    assert touched > 0, f"{name}: no group outside a LayerNorm to prune"
    assert _params(exact) < _params(model)
    assert _close(_outputs(exact, x), _outputs(model, x), 1e-4), f"{name}: removing zeroed units changed the output"

    pruned = shrink.prune(factory(), config, example_inputs=x)
    assert _params(pruned) < _params(model)

    back = shrink.load(shrink.save(pruned, tmp_path / f"{name}.shrink"), factory)
    assert all(torch.equal(a, b) for a, b in zip(_outputs(back, x), _outputs(pruned, x), strict=True))

    path = shrink.export.onnx(pruned, tmp_path / f"{name}.onnx", x)
    session = OnnxModel(path, threads=1)
    ort_out = torch.as_tensor(session.run_numpy(session.feeds(x)))
    assert _close([ort_out], _outputs(pruned, x)[:1], 1e-3), f"{name}: ONNX Runtime differs from eager"
