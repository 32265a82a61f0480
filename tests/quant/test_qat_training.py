"""QAT: gradients reach weights, step sizes and BN; BN folding; conversion reproduces the QAT model; the
``qat`` config from Python and from the bounded recipe."""

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import shrink
from shrink.errors import DataError
from shrink.quant import QAT
from shrink.quant.layers.modules import QuantConv2d, QuantLinear
from shrink.quant.qat import convert_qat, prepare_qat, qat_layers

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "qat_w4a4.yaml"


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, 5)
    )
    with torch.no_grad():  # non-trivial BN statistics
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.uniform_(0.5, 1.5)
    return net.eval()


def _data(n: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(16, 1, 6, 6, generator=g), torch.randint(0, 5, (16,), generator=g)) for _ in range(n)]


def test_prepare_folds_bn_fuses_relu_and_gradients_flow():
    net = prepare_qat(_net(), QAT(), _data())
    layers = qat_layers(net)
    assert set(layers) == {"0", "4"} and layers["0"].bn is not None and layers["0"].relu
    assert isinstance(net[1], nn.Identity) and isinstance(net[2], nn.Identity)
    net.train()
    x, y = _data()[0]
    nn.functional.cross_entropy(net(x), y).backward()
    conv = layers["0"]
    assert conv.layer.weight.grad.abs().sum() > 0
    assert conv.weight_quant.step.grad.abs().sum() > 0 and conv.input_quant.step.grad.abs().sum() > 0
    assert conv.bn.weight.grad.abs().sum() > 0  # BN still trains while not frozen


def test_bn_statistics_update_until_frozen():
    net = prepare_qat(_net(), QAT(), _data())
    conv = qat_layers(net)["0"]
    net.train()
    before = conv.bn.running_mean.clone()
    net(_data()[0][0])
    assert not torch.equal(before, conv.bn.running_mean)
    conv.freeze_bn()
    frozen = conv.bn.running_mean.clone()
    net(_data()[0][0])
    assert torch.equal(frozen, conv.bn.running_mean)


def test_eval_form_is_the_folded_layer_and_conversion_reproduces_it():
    net = prepare_qat(_net(), QAT(weight_bits=4, activation_bits=4), _data())
    x = _data()[1][0]
    conv = qat_layers(net)["0"]
    with torch.no_grad():
        expected = torch.relu(
            nn.functional.conv2d(
                conv.input_quant(x), conv.weight_quant(conv.folded_weight()), conv.folded_bias(), padding=1
            )
        )
        assert torch.allclose(conv(x), expected, atol=1e-6)
        qat_out = net(x)
    converted = convert_qat(net)
    assert isinstance(converted[0], QuantConv2d) and isinstance(converted[4], QuantLinear)
    assert converted[0].weight_int.min() >= -8 and converted[0].weight_int.max() <= 7
    assert converted[0].act_bits == 4 and converted[0].relu
    with torch.no_grad():
        assert torch.allclose(converted(x), qat_out, atol=1e-4)


def test_ste_method_keeps_step_sizes_fixed():
    net = prepare_qat(_net(), QAT(method="ste"), _data())
    assert not any(p.requires_grad for n, p in net.named_parameters() if n.endswith("step"))


def test_qat_config_end_to_end_and_needs_training_data():
    notes: list[str] = []
    data = _data()
    q = shrink.quantize(
        _net(), QAT(epochs=1, distill_alpha=0.5), train=data, calibration=data, progress=False, notes=notes
    )
    assert isinstance(q[0], QuantConv2d) and q.shrink_execution.startswith("fake-quant")
    assert any("W4A4" in n and "distilled" in n for n in notes)
    with pytest.raises(DataError, match="training data"):
        shrink.quantize(_net(), QAT(epochs=1), calibration=data, progress=False)


def test_recipe_validates():
    from shrink.recipe import load_recipe

    cfgs = load_recipe(RECIPE).configs()
    assert cfgs[0].config.type_name == "qat" and cfgs[0].config.weight_bits == 4 and cfgs[0].config.activation_bits == 4


@pytest.mark.slow
def test_recipe_runs_bounded(tmp_path):
    from shrink.recipe import run

    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["stages"][0]["epochs"] = 1
    recipe["evaluate"] = {"batch_sizes": [1], "threads": 2, "reps": 2, "warmup": 1}
    path = tmp_path / "qat.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = run(path, tmp_path / "out", progress=False)
    rows = {r.name: r for r in result.report.rows}
    qat_row = rows["QAT W4A4 (LSQ)"]
    assert qat_row.metrics["accuracy"] >= rows["baseline"].metrics["accuracy"] - 3.0
    assert any(r.runtime == "onnxruntime" for r in rows.values())
    assert (tmp_path / "out" / "qat_w4a4.onnx").is_file()


def test_bad_input_errors_leave_the_model_unchanged():
    from shrink.errors import ConfigError, ModelError

    with pytest.raises(ConfigError, match="weight_bits"):
        QAT(weight_bits=1)
    with pytest.raises(ConfigError, match="activation_bits"):
        QAT(activation_bits=9)
    net = _net()
    with torch.no_grad():
        net[4].weight[0, 0] = float("nan")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ModelError, match="4.weight"):
        shrink.quantize(net, QAT(epochs=1), train=_data(), calibration=_data(), progress=False)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not torch.isnan(before[k]).any())
    assert isinstance(net[0], nn.Conv2d) and isinstance(net[1], nn.BatchNorm2d)


def test_qat_after_pruning_keeps_the_pruned_weights_zero():
    from shrink.eval.metrics import accuracy, predict
    from shrink.pruning import MagnitudePruning
    from shrink.zoo import digits_data, digits_teacher

    data, model = digits_data(), digits_teacher(progress=False)
    pruned = shrink.prune(model, MagnitudePruning(sparsity=0.8, scope="global"))
    notes: list[str] = []
    q = shrink.quantize(pruned, QAT(epochs=1), train=data.train, calibration=data.calibration, notes=notes)
    for name in ("features.3", "features.7", "classifier.1"):
        zero = pruned.get_submodule(name).weight == 0
        layer = q.get_submodule(name)
        assert isinstance(layer, (QuantConv2d, QuantLinear))
        assert zero.float().mean() > 0.5 and not bool(layer.weight_int[zero].any())  # every pruned weight stays 0
    assert accuracy(*predict(q, data.test)) > accuracy(*predict(pruned, data.test)) - 1.0
    assert any("pruning masks of" in n for n in notes)
