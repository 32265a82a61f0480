"""A model built on the meta device (shapes, no weights) gets one clear error from every verb and from save, naming
the first tensor without values, instead of a traceback from deep inside PyTorch."""

import pytest
import torch
from torch import nn

import shrink
from shrink.errors import ModelError
from shrink.pruning import ChannelPruning, MagnitudePruning
from shrink.quant import Int8Dynamic


@pytest.fixture(scope="module")
def meta() -> nn.Module:
    with torch.device("meta"):
        return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


@pytest.mark.parametrize(
    "tried,call",
    [
        ("magnitude pruning of a meta-device model", lambda m: shrink.prune(m, MagnitudePruning(sparsity=0.5))),
        (
            "channel pruning of a meta-device model",
            lambda m: shrink.prune(m, ChannelPruning(ratio=0.5), example_inputs=torch.randn(2, 8)),
        ),
        ("quantizing a meta-device model", lambda m: shrink.quantize(m, Int8Dynamic())),
    ],
)
def test_verbs_refuse_a_meta_device_model(meta, user_sees, tried, call):
    user_sees(
        "model and data",
        tried,
        lambda: call(meta),
        ModelError,
        "parameter '0.weight' is on the meta device",
        "to_empty",
    )


def test_save_refuses_a_meta_device_model(meta, tmp_path, user_sees):
    path = tmp_path / "meta.shrink"
    user_sees(
        "model files",
        "saving a meta-device model",
        lambda: shrink.save(meta, path),
        ModelError,
        "save meta.shrink: model: parameter '0.weight' is on the meta device",
    )
    assert not path.exists()
