"""ONNX outputs keep their names: a dict / ``ModelOutput``'s keys (every output with a dynamic batch axis),
``output_names`` honoured by the quantized exporters too, and ``OnnxModel`` / ``shrink.evaluate(output=...)``
scoring the same output as the torch model."""

import onnx as onnx_lib
import pytest
import torch
from torch import nn

import shrink
from shrink.data import DataBundle
from shrink.errors import ConfigError
from shrink.eval.metrics import predict
from shrink.export import OnnxModel
from shrink.quant import Int8Dynamic


class TwoHeads(nn.Module):
    def __init__(self, as_dict: bool = True) -> None:
        super().__init__()
        self.body, self.head, self.as_dict = nn.Linear(6, 8), nn.Linear(8, 3), as_dict

    def forward(self, x):
        feat = torch.relu(self.body(x))
        return {"feat": feat, "logits": self.head(feat)} if self.as_dict else (feat, self.head(feat))


def _outputs(path):
    return [o.name for o in onnx_lib.load(str(path)).graph.output]


def test_dict_outputs_are_named_by_key_and_picked_by_name(tmp_path):
    torch.manual_seed(0)
    model, x = TwoHeads().eval(), torch.randn(5, 6)
    path = shrink.export.onnx(model, tmp_path / "m.onnx", example_inputs=x[:1])
    assert _outputs(path) == ["feat", "logits"]
    om = OnnxModel(path)
    assert torch.allclose(om(x, output="logits"), model(x)["logits"], atol=1e-5)  # batch 5: both axes dynamic
    assert torch.allclose(om(x, output=1), om(x, output="logits"))
    assert torch.allclose(om(x), model(x)["feat"], atol=1e-5)
    with pytest.raises(ConfigError, match=r"output='probs': m.onnx has no such output \(outputs: \['feat', 'logits'\]"):
        om(x, output="probs")
    with pytest.raises(ConfigError, match="output=2"):
        om(x, output=2)


def test_tuple_outputs_are_numbered(tmp_path):
    path = shrink.export.onnx(TwoHeads(as_dict=False).eval(), tmp_path / "t.onnx", example_inputs=torch.randn(1, 6))
    assert _outputs(path) == ["output", "output1"]


@pytest.mark.parametrize("output", ["logits", None])
def test_evaluate_scores_the_same_output_in_onnx_runtime(tmp_path, output):
    """Named, or by the default rule (``logits`` before the first output ``feat``), on both rows."""
    torch.manual_seed(0)
    model, x = TwoHeads().eval(), torch.randn(32, 6)
    labels = model(x)["logits"].argmax(-1)
    om = OnnxModel(shrink.export.onnx(model, tmp_path / "m.onnx", example_inputs=x[:1]))
    data = DataBundle(test=[(x, labels)], example_inputs=x[:1])
    report = shrink.evaluate({"torch": model, "onnx": om}, data, output=output, batch_sizes=(1,), progress=False)
    assert [r.metrics["accuracy"] for r in report.rows] == [100.0, 100.0]


def test_a_single_output_graph_is_scored_whatever_the_output_name(tmp_path):
    """A file whose one output is not named after the model's keys (older exports, other tools) still scores."""
    torch.manual_seed(0)
    model, x = TwoHeads().eval(), torch.randn(8, 6)
    only_logits = nn.Sequential(model.body, nn.ReLU(), model.head).eval()
    path = shrink.export.onnx(only_logits, tmp_path / "one.onnx", x[:1])
    assert _outputs(path) == ["output"]
    logits, _ = predict(OnnxModel(path), [(x, None)], output="logits")
    assert torch.allclose(logits, model(x)["logits"], atol=1e-5)


def test_output_keys_that_are_also_input_names_fall_back_to_numbered_outputs(tmp_path):
    class Echo(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, hidden):
            return {"hidden": self.fc(hidden)}

    model, x = Echo().eval(), {"hidden": torch.randn(2, 4)}
    path = shrink.export.onnx(model, tmp_path / "e.onnx", x)
    assert [i.name for i in onnx_lib.load(str(path)).graph.input] == ["hidden"] and _outputs(path) == ["output"]
    assert torch.allclose(OnnxModel(path)(x), model(**x)["hidden"], atol=1e-6)


def test_dict_inputs_holding_containers_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="example input 'extras' is a tuple"):
        shrink.export.onnx(TwoHeads(), tmp_path / "x.onnx", {"x": torch.randn(1, 6), "extras": (torch.ones(1),)})


def test_a_hook_with_the_three_argument_form_still_exports(tmp_path):
    calls = []

    def hook(path, example_inputs, opset):
        calls.append(opset)
        return shrink.export.onnx(nn.Linear(6, 2), path, example_inputs)

    model = TwoHeads()
    model.shrink_export_onnx = hook
    shrink.export.onnx(model, tmp_path / "h.onnx", torch.randn(1, 6), opset=17)
    assert calls == [17]


def test_quantized_export_keeps_the_given_output_names(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    q = shrink.quantize(model, Int8Dynamic())
    path = shrink.export.onnx(q, tmp_path / "q.onnx", torch.randn(2, 16), output_names=("logits",))
    assert _outputs(path) == ["logits"]
    assert OnnxModel(path).output_names == ["logits"]
