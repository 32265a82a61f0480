"""evaluate / predict on models returning ModelOutput, dict or tuple; eval mode and the model left as it was."""

import copy

import pytest
import torch
from torch import nn

from shrink import evaluate
from shrink.errors import ConfigError
from shrink.eval.metrics import predict, select_output

FAST = {"batch_sizes": (1,), "reps": 1, "warmup": 0, "progress": False}


class DictNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = nn.Linear(6, 4), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(x)
        return {"features": features, "logits": self.head(features)}


class TupleNet(DictNet):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        out = super().forward(x)
        return out["logits"], out["features"]


def _labelled(n: int = 24, dim: int = 6, classes: int = 3) -> tuple[torch.Tensor, list]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, dim, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, [(x[:12], y[:12]), (x[12:], y[12:])]


def test_dict_output_scores_logits_by_default_and_output_names_another_key():
    torch.manual_seed(0)
    model, (x, data) = DictNet(), _labelled()
    out, _ = predict(model, data)
    assert torch.equal(out, model(x)["logits"].detach())
    feats, _ = predict(model, data, output="features")
    assert feats.shape == (24, 4) and torch.equal(feats, model(x)["features"].detach())
    expected = float((model(x)["logits"].argmax(-1) == torch.cat([y for _, y in data])).float().mean() * 100)
    report = evaluate({"m": model}, data, "accuracy", example_inputs=x[:1], **FAST)
    assert report.row("m").metrics["accuracy"] == pytest.approx(expected)
    with pytest.raises(ConfigError, match=r"output='scores'.*keys: \['features', 'logits'\]"):
        evaluate({"m": model}, data, "accuracy", example_inputs=x[:1], output="scores", **FAST)


def test_tuple_output_scores_the_first_item_and_output_picks_by_index():
    torch.manual_seed(0)
    model, (x, data) = TupleNet(), _labelled()
    assert torch.equal(predict(model, data)[0], model(x)[0].detach())
    assert torch.equal(predict(model, data, output=1)[0], model(x)[1].detach())
    with pytest.raises(ConfigError, match="output=5: the model's tuple has 2 items"):
        predict(model, data, output=5)
    with pytest.raises(ConfigError, match="pass an index"):
        predict(model, data, output="logits")


def test_select_output_rules():
    t = torch.ones(2)
    assert select_output(t, output="ignored") is t
    assert select_output({"last_hidden_state": t, "pooler_output": t * 2}) is t
    features = {"input_ids": t * 5, "token_embeddings": t * 6, "sentence_embedding": t * 7}  # sentence-transformers
    assert torch.equal(select_output(features), t * 7)
    assert torch.equal(select_output({"a": "text", "b": t * 3}), t * 3)  # first tensor value
    assert torch.equal(select_output(({"logits": t * 4}, t)), t * 4)  # nested: the default rule applies inside


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    with torch.no_grad():  # running stats far from any batch's: train-mode and eval-mode outputs differ
        model[1].running_mean.fill_(2.0)
        model[1].running_var.fill_(5.0)
    return model.train()


def test_evaluate_runs_in_eval_mode_and_leaves_mode_and_buffers_as_they_were():
    model, (x, data) = _bn_model(), _labelled()
    model[4].eval()  # a submodule in its own mode stays so
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reference = copy.deepcopy(model).eval()
    y = torch.cat([t for _, t in data])
    expected = float((reference(x).argmax(-1) == y).float().mean() * 100)
    report = evaluate(
        {"bn": model}, data, "accuracy", example_inputs=x[:2], batch_sizes=(1, 4), reps=2, warmup=1, progress=False
    )
    assert report.row("bn").metrics["accuracy"] == pytest.approx(expected)
    assert [m.training for m in model.modules()] == [True, True, True, True, True, False]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert int(after["1.num_batches_tracked"]) == 0
    predict(model, data)  # predict alone also restores
    assert model.training and int(model[1].num_batches_tracked) == 0


def test_evaluation_mode_restores_buffers_a_forward_changes_even_in_eval_mode():
    class Counter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("calls", torch.zeros(()))
            self.fc = nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return self.fc(x)

    model, (x, data) = Counter(), _labelled()
    evaluate({"c": model}, data, "accuracy", example_inputs=x[:1], **FAST)
    assert float(model.calls) == 0.0


def _tiny_bert_config():
    from transformers import BertConfig

    return BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=3,
    )


def _token_batches(classes: int = 3) -> tuple[dict, list]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 40, (8, 6), generator=g)
    mask = torch.ones_like(ids)
    y = torch.randint(0, classes, (8,), generator=g)
    data = [
        ({"input_ids": ids[:4], "attention_mask": mask[:4]}, y[:4]),
        ({"input_ids": ids[4:], "attention_mask": mask[4:]}, y[4:]),
    ]
    return {"input_ids": ids[:1], "attention_mask": mask[:1]}, data


def test_transformers_model_output_last_hidden_state_by_default_pooler_output_chosen():
    from transformers import BertModel

    torch.manual_seed(0)
    model = BertModel(_tiny_bert_config()).train()  # dropout on: eval mode is needed for equal outputs
    example, data = _token_batches()
    out, _ = predict(model, data)
    with torch.no_grad():
        expected = torch.cat([model.eval()(**b).last_hidden_state for b, _ in data])
    model.train()
    assert out.shape == (8, 6, 16) and torch.equal(out, expected)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.pooler.dense.bias.add_(0.5)
    report = evaluate(
        {"bert": model, "twin": twin},
        [b for b, _ in data],
        "fidelity",
        example_inputs=example,
        output="pooler_output",
        **FAST,
    )
    assert report.row("bert").metrics["cos_mean"] == pytest.approx(1.0, abs=1e-6)
    assert report.row("twin").metrics["cos_mean"] < 0.9999
    assert model.training and twin.training


def test_transformers_classifier_scores_its_logits():
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(_tiny_bert_config()).eval()
    example, data = _token_batches()
    with torch.no_grad():
        logits = torch.cat([model(**b).logits for b, _ in data])
    y = torch.cat([t for _, t in data])
    expected = float((logits.argmax(-1) == y).float().mean() * 100)
    report = evaluate({"clf": model}, data, "accuracy", example_inputs=example, **FAST)
    assert report.row("clf").metrics["accuracy"] == pytest.approx(expected)
    assert report.row("clf").macs > 0
