"""Bad inputs to evaluate and latency: models on the meta device, batch sizes 0, -1 or absurdly large, an output
key the model does not have — each one clear error naming the argument."""

from __future__ import annotations

import torch
from torch import nn

from shrink import evaluate
from shrink.errors import ConfigError, DataError, ModelError
from shrink.eval.latency import repeat_batch

FAST = {"reps": 1, "warmup": 0, "progress": False}


def _data() -> tuple[torch.Tensor, list]:
    x = torch.randn(8, 6)
    return x, [(x, torch.zeros(8, dtype=torch.long))]


def test_meta_device_model_and_inputs(user_sees):
    x, data = _data()
    with torch.device("meta"):
        meta = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4))
    user_sees(
        "evaluation",
        "model built on the meta device (no weights loaded)",
        lambda: evaluate({"m": meta}, data, "accuracy", example_inputs=x[:1], **FAST),
        ModelError,
        "model 'm'",
        "'0.weight'",
        "meta device",
    )
    user_sees(
        "evaluation",
        "example input on the meta device",
        lambda: evaluate({"m": nn.Linear(6, 2)}, data, "accuracy", example_inputs=x[:1].to("meta"), **FAST),
        DataError,
        "example_inputs",
        "meta device",
    )


def test_invalid_batch_sizes(user_sees):
    x, data = _data()
    model = nn.Linear(6, 2)
    for tried, sizes in (
        ("latency batch size 0", [0]),
        ("latency batch size -1", [1, -1]),
        ("latency batch size 10**12", [10**12]),
        ("latency batch size 2.5", [2.5]),
        ("no latency batch size (empty list)", []),
    ):
        user_sees(
            "evaluation",
            tried,
            lambda sizes=sizes: evaluate({"m": model}, data, "accuracy", example_inputs=x[:1], batch_sizes=sizes),
            ConfigError,
            "evaluate: batch_sizes",
        )
    huge = torch.zeros(1).expand(1, 2**30)  # one example of 4 GiB (a view: no memory taken)
    user_sees(
        "evaluation",
        "latency batch of 64 copies of a 4 GiB example input",
        lambda: evaluate({"m": model}, data, "accuracy", example_inputs=huge, batch_sizes=[64], **FAST),
        ConfigError,
        "batch_sizes: 64 copies",
        "256.0 GiB",
    )
    user_sees("evaluation", "repeat_batch(x, 0)", lambda: repeat_batch(x, 0), ConfigError, "batch_size", "got 0")


def test_output_the_model_does_not_have(user_sees):
    x, data = _data()

    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x[:, :2], x

    user_sees(
        "evaluation",
        "output=3 for a model returning a pair",
        lambda: evaluate({"m": Pair()}, data, "accuracy", example_inputs=x[:1], output=3, **FAST),
        ConfigError,
        "output=3",
        "2 items",
    )
