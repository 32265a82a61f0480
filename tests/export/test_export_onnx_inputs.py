"""ONNX inputs are the example's tensors: a ``forward`` parameter left at its default is no graph input, a dict's
non-tensor values are constants of the graph, and each dict tensor gets only the dynamic axes its rank has; channel
pruning traces the same inputs."""

import onnx as onnx_lib
import torch
from torch import nn

import shrink
from shrink.export import OnnxModel
from shrink.pruning import ChannelPruning


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(8, 32), nn.Linear(32, 32), nn.Linear(32, 3)

    def forward(self, x, scale: float = 1.0):
        return self.head(torch.relu(self.b(torch.relu(self.a(x))))) * scale


class Masked(Scaled):
    def forward(self, x, lengths):
        keep = torch.arange(x.shape[1])[None, :] < lengths[:, None]
        return super().forward(x) * keep.unsqueeze(-1)


def _inputs(path):
    return [i.name for i in onnx_lib.load(str(path)).graph.input]


def test_a_parameter_left_at_its_default_is_no_graph_input(tmp_path):
    torch.manual_seed(0)
    model, x = Scaled().eval(), torch.randn(5, 6, 8)
    path = shrink.export.onnx(model, tmp_path / "m.onnx", example_inputs=x[:2])
    assert _inputs(path) == ["input"]
    assert [n.name for n in onnx_lib.load(str(path)).graph.node][0].startswith("/a/")  # node names unchanged
    with torch.no_grad():
        assert torch.allclose(OnnxModel(path)(x), model(x), atol=1e-5)


def test_dict_inputs_float_constants_and_one_dimensional_tensors(tmp_path):
    torch.manual_seed(0)
    scaled = {"x": torch.randn(4, 6, 8), "scale": 2.0}
    path = shrink.export.onnx(Scaled().eval(), tmp_path / "s.onnx", scaled)
    assert _inputs(path) == ["x"]
    model = Masked().eval()
    masked = {"x": torch.randn(4, 6, 8), "lengths": torch.tensor([6, 5, 3, 1])}
    path = shrink.export.onnx(model, tmp_path / "l.onnx", masked)
    assert _inputs(path) == ["x", "lengths"]
    other = {"x": torch.randn(3, 9, 8), "lengths": torch.tensor([9, 2, 4])}  # another batch and length
    with torch.no_grad():
        assert torch.allclose(OnnxModel(path)(other), model(**other), atol=1e-5)


def test_channel_pruning_traces_a_dict_with_a_float_option():
    torch.manual_seed(0)
    model = Scaled().eval()
    example = {"x": torch.randn(4, 6, 8), "scale": 2.0}
    pruned = shrink.prune(model, ChannelPruning(ratio=0.5), example_inputs=example)
    assert pruned.a.out_features == 16 and pruned(**example).shape == (4, 6, 3)
