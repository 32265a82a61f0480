"""Regressors: the training configs take ``loss='mse'`` / ``'l1'`` (mixup blends the float targets), ``evaluate``
scores ``metric='mse'``, and the classification losses and metrics refuse a one-output model or float targets by
name instead of training nothing (cross-entropy over one "class" is 0 whatever the weights)."""

import pytest
import torch
from torch import nn

import shrink
from shrink.data import DataBundle
from shrink.distillation import KnowledgeDistillation
from shrink.errors import ConfigError, DataError
from shrink.pruning import GradualPruning
from shrink.quant import QAT
from shrink.train import FineTune


def _data(n=256, flat=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    y = x[:, :3].sum(1, keepdim=True) * 0.5
    y = y.squeeze(1) if flat else y
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, n, 32)]


def _regressor():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))


def _mse(model, data):
    with torch.no_grad():
        return float(torch.stack([((model(x) - y.reshape(-1, 1)) ** 2).mean() for x, y in data]).mean())


@pytest.mark.parametrize(("loss", "flat", "mixup"), [("mse", False, False), ("l1", True, False), ("mse", True, True)])
def test_finetune_trains_a_regressor(loss, flat, mixup):
    data, model = _data(flat=flat), _regressor()
    before = _mse(model, data)
    trained = shrink.finetune(model, FineTune(epochs=20, lr=1e-2, loss=loss, mixup=mixup), train=data, progress=False)
    assert _mse(trained, data) < before / 4


def test_pruning_and_qat_train_with_the_regression_loss():
    data = _data()
    pruned = shrink.prune(
        _regressor(), GradualPruning(final_sparsity=0.5, epochs=10, lr=1e-2, loss="mse"), train=data, progress=False
    )
    assert _mse(pruned, data) < _mse(_regressor(), data) / 4
    q = shrink.quantize(
        pruned, QAT(weight_bits=8, activation_bits=8, epochs=2, loss="mse"), train=data, calibration=data,
        progress=False,
    )  # fmt: skip
    assert _mse(q, data) < _mse(_regressor(), data) / 4


@pytest.mark.parametrize("flat", [False, True])
def test_cross_entropy_on_a_regressor_is_refused(flat):
    with pytest.raises(DataError, match=r"one score per class.*\(32, 1\).*loss='mse'"):
        shrink.finetune(_regressor(), FineTune(epochs=1), train=_data(flat=flat), progress=False)


def test_cross_entropy_on_float_targets_is_refused():
    model = nn.Linear(8, 3)
    with pytest.raises(DataError, match=r"integer class labels.*float targets of shape \(32,\).*loss='mse'"):
        shrink.finetune(model, FineTune(epochs=1), train=_data(flat=True), progress=False)


def test_distilling_a_regressor_points_to_embedding_distillation():
    cfg = KnowledgeDistillation(epochs=1)
    with pytest.raises(DataError, match=r"class probabilities.*EmbeddingDistillation\(loss='mse'\)"):
        shrink.distill(_regressor(), _regressor(), cfg, train=_data(), progress=False)
    with pytest.raises(ConfigError, match="distill_alpha distils class probabilities"):
        cfg = GradualPruning(final_sparsity=0.5, epochs=10, loss="mse", distill_alpha=0.5)
        shrink.prune(_regressor(), cfg, train=_data(), progress=False)


def test_evaluate_scores_a_regressor_by_mean_squared_error():
    data, model = _data(flat=True), _regressor()
    bundle = DataBundle(test=data, example_inputs=data[0][0], metric="mse")
    report = shrink.evaluate({"fp32": model}, bundle, batch_sizes=(1,), reps=1, warmup=0)
    assert report.rows[0].metrics["mse"] == pytest.approx(_mse(model, data), rel=1e-5)
    assert report.rows[0].metrics["mae"] > 0
    with pytest.raises(DataError, match=r"accuracy needs one score per class.*metric='mse'"):
        shrink.evaluate({"fp32": model}, data, metric="accuracy", example_inputs=data[0][0], batch_sizes=(1,))
    with pytest.raises(ConfigError, match="metric must be one of"):
        DataBundle(test=data, example_inputs=data[0][0], metric="rmse")


def test_integral_float_labels_still_score_accuracy_and_dense_outputs_still_train():
    from shrink.eval.metrics import accuracy
    from shrink.train.mixup import cross_entropy

    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    assert accuracy(logits, torch.tensor([0.0, 1.0])) == 100.0  # labels kept as floats by a numpy pipeline
    dense = torch.randn(2, 3, 5, 1, requires_grad=True)  # (N, C, H, W) with W = 1: classes are axis 1
    assert cross_entropy(dense, torch.randint(0, 3, (2, 5, 1))).item() > 0
