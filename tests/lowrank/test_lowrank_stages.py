"""Decomposition stages: rank choices, skipped layers, save/load and ONNX export of decomposed models."""

import pytest
import torch

import shrink
from shrink.errors import ConfigError
from shrink.export import OnnxModel
from shrink.lowrank import CPDecomposition, Factorized, SVDDecomposition, TuckerDecomposition
from shrink.select import Selector
from shrink.zoo import DigitsCNN


def _params(m, prefix):
    return sum(p.numel() for n, p in m.named_parameters() if n.startswith(prefix))


def _model():
    torch.manual_seed(0)
    return DigitsCNN().eval()


def test_svd_stage_halves_selected_layers_and_notes_skips():
    model = _model()
    ctx = shrink.Context()
    out = shrink.api.apply(model, SVDDecomposition(param_fraction=0.5), ctx)
    assert isinstance(out.classifier[1], Factorized)
    assert _params(out, "classifier.1") <= 0.5 * _params(model, "classifier.1") + 128
    assert isinstance(model.classifier[1], torch.nn.Linear)  # the user's model is untouched
    energy = shrink.decompose(model, SVDDecomposition(energy=0.999, selector=Selector(include=("classifier.1",))))
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(energy(x), model(x), atol=0.05 * float(model(x).abs().max()))
    full = shrink.api.apply(model, SVDDecomposition(rank=1000, selector=Selector(include=("classifier.4",))), ctx)
    assert isinstance(full.classifier[4], torch.nn.Linear) and any("kept classifier.4" in n for n in ctx.notes)


def test_rank_choice_must_be_exactly_one():
    with pytest.raises(ConfigError, match="exactly one"):
        SVDDecomposition()
    with pytest.raises(ConfigError, match="exactly one"):
        TuckerDecomposition(rank=4, energy=0.9)
    with pytest.raises(ConfigError, match="energy"):
        CPDecomposition(energy=0.9)
    with pytest.raises(ConfigError, match="param_fraction"):
        SVDDecomposition(param_fraction=1.5)


@pytest.mark.parametrize(
    "config",
    [
        TuckerDecomposition(param_fraction=0.5, selector=Selector(include=("features.3", "features.7"))),
        CPDecomposition(param_fraction=0.5, n_iter=15, selector=Selector(include=("features.7",))),
    ],
)
def test_decomposed_model_saves_loads_and_exports_to_onnx(tmp_path, config):
    model = _model()
    out = shrink.decompose(model, config)
    assert isinstance(out.features[7], Factorized)
    assert _params(out, "features.7") <= 0.5 * _params(model, "features.7")
    x = torch.rand(3, 1, 8, 8)
    path = shrink.save(out, tmp_path / "m.shrink")
    loaded = shrink.load(path, DigitsCNN)
    assert isinstance(loaded.features[7], Factorized) and loaded.features[7].method == out.features[7].method
    with torch.no_grad():
        assert torch.equal(loaded(x), out(x))
    onnx_path = shrink.export.onnx(out, tmp_path / "m.onnx", x[:1])
    session = OnnxModel(onnx_path, threads=1)
    with torch.no_grad():
        assert torch.allclose(torch.as_tensor(session(x)), out(x), atol=1e-4)


def test_tucker_skips_pointwise_and_grouped_convs():
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 1), torch.nn.Conv2d(8, 8, 3, groups=2))
    ctx = shrink.Context()
    shrink.api.apply(model, TuckerDecomposition(rank=2), ctx)
    assert len([n for n in ctx.notes if "skipped" in n]) == 2
