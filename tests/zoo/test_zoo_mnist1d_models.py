"""MNIST-1D models: the paper's shapes, bounded training that learns, the same weights whatever the thread count,
and the cache."""

import pytest
import torch

from shrink.eval import accuracy, count_params, predict
from shrink.zoo.mnist1d import mnist1d_data
from shrink.zoo.mnist1d_models import MNIST1D_MODELS, mnist1d_model, train_mnist1d

#: name -> (parameters of the paper's architecture, accuracy a few epochs must beat on validation)
EXPECTED = {
    "logistic": (410, 20.0),
    "mlp": (78858, 35.0),
    "cnn": (5210, 35.0),
    "gru": (5134, 20.0),
    "cnn_bn": (5285, 35.0),
    "lstm_attention": (4843, 20.0),
}
EPOCHS = {"logistic": 3, "mlp": 3, "cnn": 3, "gru": 1, "cnn_bn": 2, "lstm_attention": 1}


@pytest.mark.parametrize("name", sorted(MNIST1D_MODELS))
def test_each_model_takes_signals_and_gives_ten_logits(name):
    model = MNIST1D_MODELS[name][0]()
    assert model(torch.randn(3, 40)).shape == (3, 10)
    if name in EXPECTED:
        assert count_params(model)[0] == EXPECTED[name][0]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_few_epochs_learn_above_chance(name):
    torch.manual_seed(0)
    model = train_mnist1d(MNIST1D_MODELS[name][0](), epochs=EPOCHS[name], seed=0)
    assert accuracy(*predict(model, mnist1d_data().val)) > EXPECTED[name][1]


def test_training_gives_the_same_weights_whatever_the_thread_count():
    states = []
    old = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            states.append(train_mnist1d(MNIST1D_MODELS["cnn"][0](), epochs=1, seed=3).state_dict())
            assert torch.get_num_threads() == threads  # the caller's setting is restored
    finally:
        torch.set_num_threads(old)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_trained_model_is_cached_and_reloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("SHRINK_CACHE", str(tmp_path))
    first = mnist1d_model("logistic", seed=1, epochs=2)
    monkeypatch.setattr(
        "shrink.zoo.mnist1d_models.train_mnist1d", lambda *a, **k: pytest.fail("retrained despite the cache")
    )
    again = mnist1d_model("logistic", seed=1, epochs=2)
    assert torch.equal(first.linear.weight, again.linear.weight) and not again.training
    other_seed = MNIST1D_MODELS["logistic"][0]()
    assert not torch.equal(first.linear.weight, other_seed.linear.weight)


def test_cached_weights_of_another_architecture_are_retrained(tmp_path, monkeypatch):
    monkeypatch.setenv("SHRINK_CACHE", str(tmp_path))
    path = tmp_path / "zoo" / "mnist1d_mlp-v1-seed0-e1.safetensors"
    path.parent.mkdir(parents=True)
    from safetensors.torch import save_file

    save_file({"linear1.weight": torch.zeros(100, 40)}, str(path))  # an older, narrower MLP
    model = mnist1d_model("mlp", seed=0, epochs=1)
    assert model.linear1.weight.shape == (256, 40) and model.linear1.weight.abs().sum() > 0
    assert mnist1d_model("mlp", seed=0, epochs=1).linear1.weight.shape == (256, 40)  # rewritten, reloads


def test_unknown_model_name_is_an_error():
    with pytest.raises(ValueError, match="'resnet'.*logistic"):
        mnist1d_model("resnet")


def test_mixup_recipe_is_cached_apart_from_the_paper_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("SHRINK_CACHE", str(tmp_path))
    plain = mnist1d_model("logistic", seed=1, epochs=2)
    mixed = mnist1d_model("logistic", seed=1, epochs=2, mixup=True)
    assert not torch.equal(plain.linear.weight, mixed.linear.weight)
    names = {p.name for p in (tmp_path / "zoo").iterdir() if p.suffix == ".safetensors"}
    assert names == {
        "mnist1d_logistic-v1-seed1-e2.safetensors",
        "mnist1d_logistic-v1-seed1-e2-mixup-cosine.safetensors",
    }
    again = mnist1d_model("logistic", seed=1, epochs=2, mixup=True)
    assert torch.equal(again.linear.weight, mixed.linear.weight)
