"""``TeacherEnsemble``: the log of the members' mean probabilities, refusals that name the member, and distillation /
pruning that learn from it without touching the members (one of them may be the model being pruned)."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import shrink
from shrink.distillation import KnowledgeDistillation, TeacherEnsemble
from shrink.errors import ConfigError, DataError
from shrink.pruning import GradualPruning


def _net(seed: int, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, classes))


def _batches():
    torch.manual_seed(9)
    return [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(3)]


def test_output_is_the_log_of_the_mean_probabilities():
    a, b, c = _net(0), _net(1), _net(2)
    x = torch.randn(5, 4)
    out = TeacherEnsemble([a, b, c])(x)
    mean = torch.stack([m(x).softmax(-1) for m in (a, b, c)]).mean(0)
    assert torch.allclose(out.exp(), mean, atol=1e-6)
    assert torch.allclose(out.exp().sum(-1), torch.ones(5), atol=1e-6)
    assert torch.allclose(TeacherEnsemble([a, a])(x), a(x).log_softmax(-1), atol=1e-6)


def test_members_with_a_logits_attribute_are_read():
    class Wrapped(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return SimpleNamespace(logits=self.inner(x))

    a, b = _net(0), _net(1)
    x = torch.randn(2, 4)
    assert torch.allclose(TeacherEnsemble([Wrapped(a), b])(x), TeacherEnsemble([a, b])(x))


@pytest.mark.parametrize(
    ("members", "error", "match"),
    [
        (lambda: [_net(0)], ConfigError, "at least 2 members, got 1"),
        (lambda: [_net(0), "model.pt"], ConfigError, "member 1 is a str"),
    ],
)
def test_bad_member_lists_are_refused(members, error, match):
    with pytest.raises(error, match=match):
        TeacherEnsemble(members())


def test_members_that_disagree_on_classes_or_return_no_logits_are_named():
    x = torch.randn(2, 4)
    with pytest.raises(DataError, match=r"member 1 returned logits of shape \(2, 5\), member 0 \(2, 3\)"):
        TeacherEnsemble([_net(0), _net(1, classes=5)])(x)

    class Embeds(nn.Module):
        def forward(self, x):
            return {"embedding": x}

    with pytest.raises(DataError, match="member 1 returned a dict"):
        TeacherEnsemble([_net(0), Embeds()])(x)


def test_distilling_from_an_ensemble_trains_the_student_and_leaves_the_members_alone():
    a, b = _net(0), _net(1)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (a, b)]
    student = _net(5)
    start = student[0].weight.clone()
    cfg = KnowledgeDistillation(epochs=2, lr=1e-2, temperature=1.0, alpha=1.0)
    out = shrink.distill(student, TeacherEnsemble([a, b]), cfg, train=_batches(), progress=False)
    assert not torch.equal(out[0].weight, start)
    for m, state in zip((a, b), before, strict=True):
        assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
        assert all(p.requires_grad for p in m.parameters())


def test_pruning_a_member_against_the_ensemble_prunes_a_copy():
    model, other = _net(0), _net(1)
    weight = model[0].weight.clone()
    cfg = GradualPruning(final_sparsity=0.5, epochs=2, pruning_steps=1, lr=1e-2, distill_alpha=1.0, temperature=1.0)
    pruned = shrink.prune(model, cfg, train=_batches(), teacher=TeacherEnsemble([model, other]), progress=False)
    weights = torch.cat([pruned[0].weight.flatten(), pruned[2].weight.flatten()])
    assert float((weights == 0).float().mean()) >= 0.45
    assert torch.equal(model[0].weight, weight)
