"""Bad models and data: NaN/Inf weights or activations, empty / mis-shaped / non-finite calibration data, untraceable
models and unsupported ops in structured pruning — each gives an error naming the layer or batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shrink.api import prune, quantize
from shrink.errors import DataError, ModelError, UnsupportedOpError


@pytest.fixture
def student():
    from shrink.zoo import digits_student

    return digits_student().eval()


@pytest.fixture
def x(digits):
    return digits.example_inputs


def _with_nan(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        model.features[0].weight[0, 0, 0, 0] = float("nan")
    return model


def test_non_finite_weights(student, x, tmp_path, user_sees):
    from shrink.pruning import MagnitudePruning
    from shrink.quant import Int8Static
    from shrink.recipe import run

    bad = _with_nan(student)
    user_sees(
        "model and data",
        "NaN weight, magnitude pruning",
        lambda: prune(bad, MagnitudePruning(sparsity=0.5)),
        ModelError,
        "'features.0.weight'",
        "NaN",
    )
    user_sees(
        "model and data",
        "NaN weight, int8 static quantization",
        lambda: quantize(bad, Int8Static(), calibration=[x], example_inputs=x),
        ModelError,
        "features.0.weight",
    )
    path = tmp_path / "inf.yaml"
    path.write_text(f"model: {{factory: '{__name__}:inf_model'}}\ndata: {{zoo: digits}}\n")
    user_sees(
        "model and data",
        "model factory returning Inf weights (recipe)",
        lambda: run(path, tmp_path / "out", progress=False),
        ModelError,
        "inf.yaml",
        "model",
        "parameter 'classifier.1.bias' contains Inf",
    )


def inf_model() -> nn.Module:
    from shrink.zoo import digits_student

    m = digits_student()
    with torch.no_grad():
        m.classifier[1].bias[0] = float("inf")
    return m


def test_bad_calibration_data(student, x, user_sees):
    from shrink.quant import Int8Static

    def calibrate(data):
        return lambda: quantize(student, Int8Static(), calibration=data, example_inputs=x)

    user_sees("model and data", "empty calibration data (int8 static)", calibrate([]), DataError, "no batch")
    user_sees(
        "model and data",
        "calibration batch containing NaN",
        calibrate([torch.full_like(x, float("nan"))]),
        DataError,
        "calibration batch",
        "NaN or Inf",
    )
    user_sees(
        "model and data",
        "mis-shaped calibration batch (flat vectors for a CNN)",
        calibrate([torch.randn(4, 64)]),
        DataError,
        "calibration batch",
        "(4, 64)",
    )


def test_bundle_calibration_checked_against_example_inputs(user_sees):
    from shrink.data import DataBundle

    example = torch.zeros(1, 1, 8, 8)
    bundle = DataBundle(train=None, val=None, test=[], calibration=[torch.zeros(2, 64)], example_inputs=example)
    user_sees(
        "model and data",
        "recipe data whose calibration batches differ from its example inputs",
        lambda: list(bundle.calibration),
        DataError,
        "calibration data batch 1",
        "(2, 64)",
        "(1, 1, 8, 8)",
    )
    nan = DataBundle(
        train=None, val=None, test=[], calibration=[torch.full((2, 1, 8, 8), float("inf"))], example_inputs=example
    )
    user_sees(
        "model and data",
        "recipe data with an Inf calibration batch",
        lambda: list(nan.calibration),
        DataError,
        "calibration data batch 1",
        "NaN or Inf",
    )


class Branchy(nn.Module):
    """Data-dependent control flow: torch.export cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        if y.sum() > 0:
            y = y * 2
        return self.b(y)


class Spectral(nn.Module):
    """An op with no channel rule between two prunable convs."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.fft.fft(self.a(x), dim=1).real)


def test_structured_pruning_of_untraceable_or_unsupported_models(x, student, user_sees):
    from shrink.pruning.structured import ChannelPruning

    cfg = ChannelPruning(ratio=0.5)
    user_sees(
        "model and data",
        "untraceable model (data-dependent if) for channel pruning",
        lambda: prune(Branchy().eval(), cfg, example_inputs=x),
        ModelError,
        "cannot trace Branchy",
    )
    user_sees(
        "model and data",
        "unsupported op (torch.fft) between pruned convs",
        lambda: prune(Spectral().eval(), cfg, example_inputs=x),
        UnsupportedOpError,
        "aten.fft_fft",
    )
    user_sees(
        "model and data",
        "channel pruning without example inputs",
        lambda: prune(student, cfg),
        DataError,
        "example_inputs",
    )


class Overflow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * 1e30 * 1e30  # Inf activations at the output


def test_inf_activations_during_calibration_are_an_error():
    from shrink.quant import Int8Static

    with pytest.raises(DataError):
        quantize(Overflow().eval(), Int8Static(), calibration=[torch.randn(2, 4)], example_inputs=torch.randn(1, 4))


def test_non_iterable_calibration_is_a_data_error(student, x):
    from shrink.quant import Int8Static

    with pytest.raises(DataError):
        quantize(student, Int8Static(), calibration=5, example_inputs=x)


def test_save_pretrained_of_a_compressed_transformers_model(tmp_path, user_sees):
    from transformers import BertConfig, BertModel

    from shrink.quant import WeightOnly

    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    q = quantize(BertModel(config).eval(), WeightOnly(bits=4, group_size=32))
    user_sees(
        "model and data",
        "save_pretrained of a transformers model after weight-only int4",
        lambda: q.save_pretrained(tmp_path / "q"),
        ModelError,
        "save_pretrained",
        "random weights",
        "shrink.save",
    )
    assert not (tmp_path / "q").exists()
