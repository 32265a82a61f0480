"""Dynamic axes of exported recurrent models: a ``batch_first=False`` LSTM's batch is axis 1, a time series has no
fixed length, and a model that cannot take another length keeps it fixed; other models keep the batch on axis 0."""

import onnx as onnx_lib
import pytest
import torch
from torch import nn

import shrink
from shrink.export import OnnxModel
from shrink.quant import Int8Dynamic


class TimeMajor(nn.Module):
    """(time, batch, features) -> class scores from the last step."""

    def __init__(self, batch_first: bool = False) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.rnn, self.head = nn.LSTM(8, 16, num_layers=2, batch_first=batch_first), nn.Linear(16, 3)

    def forward(self, x):
        out = self.rnn(x)[0]
        return self.head(out[:, -1] if self.batch_first else out[-1])


class Sequences(nn.Module):
    """Returns the whole sequence and the last hidden states."""

    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.rnn = nn.GRU(8, 16, batch_first=batch_first)

    def forward(self, x):
        return self.rnn(x)


class Flattened(nn.Module):
    """Reads all 10 steps into one Linear: the length cannot change."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.head = nn.GRU(8, 4, batch_first=True), nn.Linear(40, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0].flatten(1))


def _shapes(path):
    graph = onnx_lib.load(str(path)).graph
    values = [*graph.input, *graph.output]
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def _agrees(path, model, x):
    with torch.no_grad():
        ref = model(x)
    ref, graph = (ref if isinstance(ref, tuple) else (ref,)), OnnxModel(path)
    return all(torch.allclose(graph(x, output=i), r, atol=1e-5) for i, r in enumerate(ref))


def test_time_major_lstm_runs_at_any_batch_and_length(tmp_path):
    torch.manual_seed(0)
    model = TimeMajor().eval()
    path = shrink.export.onnx(model, tmp_path / "m.onnx", torch.randn(10, 4, 8))
    assert _shapes(path) == {"input": ["sequence", "batch", 8], "output": ["batch", 3]}
    for time, batch in [(10, 1), (12, 4), (7, 9)]:
        assert _agrees(path, model, torch.randn(time, batch, 8))


@pytest.mark.parametrize("batch_first", [True, False])
def test_sequence_outputs_are_dynamic_where_they_grow(tmp_path, batch_first):
    torch.manual_seed(0)
    model = Sequences(batch_first).eval()
    x = torch.randn(4, 10, 8) if batch_first else torch.randn(10, 4, 8)
    shapes = _shapes(shrink.export.onnx(model, tmp_path / "m.onnx", x))
    seq = ["batch", "sequence", 16] if batch_first else ["sequence", "batch", 16]
    assert shapes == {"input": seq[:2] + [8], "output": seq, "output1": [1, "batch", 16]}
    y = torch.randn(3, 13, 8) if batch_first else torch.randn(13, 3, 8)
    assert _agrees(tmp_path / "m.onnx", model, y)


def test_a_model_that_cannot_take_another_length_keeps_it_fixed(tmp_path):
    torch.manual_seed(0)
    model = Flattened().eval()
    path = shrink.export.onnx(model, tmp_path / "m.onnx", torch.randn(2, 10, 8))
    assert _shapes(path) == {"input": ["batch", 10, 8], "output": ["batch", 3]}
    assert _agrees(path, model, torch.randn(5, 10, 8))


def test_int8_dynamic_time_major_lstm_keeps_its_axes(tmp_path):
    torch.manual_seed(0)
    model = TimeMajor().eval()
    q = shrink.quantize(model, Int8Dynamic())
    path = shrink.export.onnx(q, tmp_path / "q.onnx", torch.randn(10, 4, 8))
    assert "DynamicQuantizeLSTM" in {n.op_type for n in onnx_lib.load(str(path)).graph.node}
    x = torch.randn(6, 2, 8)
    with torch.no_grad():
        assert (OnnxModel(path)(x) - q(x)).abs().max() < 0.02 * model(x).abs().max()


def test_models_without_recurrent_layers_keep_the_batch_on_axis_zero(tmp_path):
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 38, 3)).eval()
    assert _shapes(shrink.export.onnx(model, tmp_path / "m.onnx", torch.randn(2, 1, 40))) == {
        "input": ["batch", 1, 40], "output": ["batch", 3]
    }  # fmt: skip
