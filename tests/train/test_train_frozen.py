"""A model frozen for inference (every parameter ``requires_grad=False``) is refused by name before any training
verb starts, and the user's model is left as it was; a partly frozen model trains its trainable parameters only."""

import pytest
import torch
from torch import nn

import shrink
from shrink.errors import ModelError
from shrink.pruning import GradualPruning
from shrink.train import FineTune


def _frozen():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).requires_grad_(False)
    batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(2)]
    return model, batches


@pytest.mark.parametrize(
    "run",
    [
        lambda m, b: shrink.finetune(m, FineTune(epochs=1), train=b, progress=False),
        lambda m, b: shrink.prune(
            m, GradualPruning(final_sparsity=0.5, epochs=2, pruning_steps=1), train=b, progress=False
        ),
    ],
    ids=["finetune", "gradual_prune"],
)
def test_frozen_model_is_refused_and_left_untouched(run):
    model, batches = _frozen()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ModelError, match=r"nothing to train: every parameter.*requires_grad=False"):
        run(model, batches)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(p.requires_grad for p in model.parameters())


def test_partly_frozen_model_trains_the_rest_only():
    model, batches = _frozen()
    model[2].requires_grad_(True)
    first = model[0].weight.clone()
    out = shrink.finetune(model, FineTune(epochs=2, lr=1e-2), train=batches, progress=False)
    assert torch.equal(out[0].weight, first)
    assert not torch.equal(out[2].weight, model[2].weight)
