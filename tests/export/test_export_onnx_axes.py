"""Dynamic axes of the exported graph: axis 0 is the batch by default; ``dynamic_axes`` says otherwise (a
``batch_first=False`` LSTM's batch is axis 1 and its length varies), is checked against the graph's names and the
inputs' ranks, reaches the quantized exporters, and a time-major model exported with the default axes is warned
about. Layers that run on PyTorch's kernels only are refused by name."""

import warnings

import onnx as onnx_lib
import pytest
import torch
from torch import nn

import shrink
from shrink.errors import ConfigError, ModelError
from shrink.export import OnnxModel
from shrink.quant import Int8Dynamic, Int8Static

TIME_MAJOR = {"input": {0: "sequence", 1: "batch"}, "output": {0: "batch"}}


class TimeMajor(nn.Module):
    """(time, batch, features) -> class scores from the last step."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.head = nn.LSTM(8, 16, num_layers=2), nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0][-1])


class Transposed(TimeMajor):
    """(batch, time, features), transposed for the time-major LSTM: axis 0 is the batch."""

    def forward(self, x):
        return super().forward(x.transpose(0, 1))


def _ours(caught):
    return [w for w in caught if str(w.message).startswith("ONNX export:")]


def _shapes(path):
    graph = onnx_lib.load(str(path)).graph
    values = [*graph.input, *graph.output]
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def test_time_major_lstm_with_its_axes_runs_at_any_batch_and_length(tmp_path):
    torch.manual_seed(0)
    model = TimeMajor().eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = shrink.export.onnx(model, tmp_path / "m.onnx", torch.randn(10, 4, 8), dynamic_axes=TIME_MAJOR)
    assert not _ours(caught)  # axes given: no warning
    assert _shapes(path) == {"input": ["sequence", "batch", 8], "output": ["batch", 3]}
    for time, batch in [(10, 1), (12, 4), (7, 9)]:
        x = torch.randn(time, batch, 8)
        with torch.no_grad():
            assert torch.allclose(OnnxModel(path)(x), model(x), atol=1e-5)


def test_time_major_lstm_with_the_default_axes_is_warned_about(tmp_path):
    with pytest.warns(UserWarning, match=r"LSTM 'rnn' \(batch_first=False\) reads a batch of 4.*dynamic_axes"):
        path = shrink.export.onnx(TimeMajor(), tmp_path / "m.onnx", torch.randn(10, 4, 8))
    assert _shapes(path)["input"] == ["batch", 4, 8]  # what the warning is about


def test_a_model_that_transposes_for_its_lstm_is_not_warned_about(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = shrink.export.onnx(Transposed(), tmp_path / "m.onnx", torch.randn(4, 10, 8))
    assert not _ours(caught)
    assert _shapes(path)["input"] == ["batch", 10, 8]


@pytest.mark.parametrize("config", [Int8Dynamic(), Int8Static()], ids=["int8_dynamic", "int8_static"])
def test_quantized_exporters_take_the_axes(tmp_path, config):
    torch.manual_seed(0)
    model, x = TimeMajor().eval(), torch.randn(10, 4, 8)
    q = shrink.quantize(model, config, calibration=[(torch.randn(10, 4, 8), None) for _ in range(2)])
    path = shrink.export.onnx(q, tmp_path / "q.onnx", x, dynamic_axes=TIME_MAJOR)
    assert _shapes(path)["input"] == ["sequence", "batch", 8]
    y = torch.randn(6, 2, 8)
    with torch.no_grad():
        assert (OnnxModel(path)(y) - q(y)).abs().max() < 0.05 * model(y).abs().max()


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        ({"x": {0: "batch"}}, r"dynamic_axes\['x'\]: no input or output.*inputs are \['input'\]"),
        ({"input": {3: "batch"}}, r"dynamic_axes\['input'\] names axes \[3\].*rank 3"),
        ({"input": [0, 1]}, r"dynamic_axes\['input'\] must map axis numbers to labels"),
    ],
)
def test_wrong_axes_are_refused_by_name(tmp_path, axes, message):
    with pytest.raises(ConfigError, match=message):
        shrink.export.onnx(TimeMajor(), tmp_path / "m.onnx", torch.randn(10, 4, 8), dynamic_axes=axes)
    assert not (tmp_path / "m.onnx").exists()


def test_a_hook_without_dynamic_axes_is_refused_when_axes_are_given(tmp_path):
    model = nn.Linear(4, 2)
    model.shrink_export_onnx = lambda path, example_inputs, opset: path  # an old three-argument hook
    with pytest.raises(ConfigError, match="does not take dynamic_axes"):
        shrink.export.onnx(model, tmp_path / "m.onnx", torch.randn(2, 4), dynamic_axes={"input": {0: "batch"}})


def test_the_recipe_stage_takes_the_axes(tmp_path):
    from shrink.export.stage import OnnxExport

    cfg = OnnxExport.model_validate({"dynamic_axes": {"input": {"0": "sequence", 1: "batch"}, "output": {0: "batch"}}})
    assert cfg.dynamic_axes == TIME_MAJOR
    with pytest.raises(ValueError, match="dynamic_axes"):
        OnnxExport.model_validate({"dynamic_axes": {"input": {"first": "batch"}}})


def test_a_layer_on_pytorch_kernels_only_is_refused_by_name(tmp_path):
    q = shrink.quantize(TimeMajor().eval(), Int8Dynamic(backend="torch"))
    with pytest.raises(ModelError, match=r"layer 'rnn' is a torch\.ao\..*LSTM, which runs on PyTorch's kernels only"):
        shrink.export.onnx(q, tmp_path / "m.onnx", torch.randn(10, 4, 8))
    assert not list(tmp_path.iterdir())


def test_a_hook_taking_keywords_gets_the_names_and_axes(tmp_path):
    seen = {}

    def hook(path, example_inputs, opset, **kwargs):
        seen.update(kwargs)
        return path

    model = nn.Linear(4, 2)
    model.shrink_export_onnx = hook
    shrink.export.onnx(model, tmp_path / "m.onnx", torch.randn(2, 4), dynamic_axes={"input": {0: "batch"}})
    assert seen == {"output_names": None, "dynamic_axes": {"input": {0: "batch"}}}


def test_float_helpers_among_torch_ao_quantized_modules_still_export(tmp_path):
    from torch.ao.nn.quantized import FloatFunctional

    class Skip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.add = nn.Linear(4, 4), FloatFunctional()

        def forward(self, x):
            return self.add.add(self.fc(x), x)

    model, x = Skip().eval(), torch.randn(3, 4)
    path = shrink.export.onnx(model, tmp_path / "m.onnx", x)
    with torch.no_grad():
        assert torch.allclose(OnnxModel(path)(x), model(x), atol=1e-6)
