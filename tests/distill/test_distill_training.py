"""Distillation stages: hints through projections, training with resume, students cut from teacher layers."""

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import shrink
import shrink.distillation
from shrink.distillation import (
    DistillLoss,
    EmbeddingDistillation,
    Hint,
    KnowledgeDistillation,
    kd_loss,
    student_from_layers,
)
from shrink.errors import ConfigError, DataError, SelectorError
from shrink.zoo import DigitsCNN, DigitsStudent


def _cnn_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))


def _mean_kd(student, teacher, data):
    with torch.no_grad():
        return sum(float(kd_loss(student(x), teacher(x), 4.0)) for x, _ in data) / len(data)


def test_verbs_live_on_shrink_and_family_packages_have_their_own_names():
    import types

    import shrink.autosearch
    import shrink.distillation
    import shrink.pruning

    for verb in (shrink.distill, shrink.prune, shrink.search):
        assert isinstance(verb, types.FunctionType)  # importing the family packages does not rebind the verbs
    for package in (shrink.distillation, shrink.pruning, shrink.autosearch):
        assert type(package) is types.ModuleType and not callable(package)  # no module-class swapping
    assert shrink.distillation.KnowledgeDistillation is KnowledgeDistillation


def test_fitnet_hint_projects_student_features_to_teacher_width():
    torch.manual_seed(0)
    teacher, student = DigitsCNN().eval(), DigitsStudent()
    x = torch.rand(4, 1, 8, 8)
    hints = [
        Hint(student="features.3", teacher="features.3"),
        Hint(student="features.8", teacher="features.8", kind="attention_map", weight=0.5),
    ]
    loss = DistillLoss(teacher, hints=hints, student=student, example_inputs=x)
    proj = loss.projections["0"]
    assert isinstance(proj, nn.Conv2d) and (proj.in_channels, proj.out_channels) == (16, 64)
    value = loss(student, x, torch.zeros(4, dtype=torch.long))
    value.backward()
    assert value.dim() == 0 and torch.isfinite(value)
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())  # the teacher is frozen
    loss.close()
    assert not student.features[3]._forward_hooks and not teacher.features[3]._forward_hooks
    with pytest.raises(SelectorError, match="features.99"):
        DistillLoss(
            teacher, hints=[Hint(student="features.99", teacher="features.3")], student=student, example_inputs=x
        )
    with pytest.raises(ConfigError, match="example_inputs"):
        DistillLoss(teacher, hints=hints)


@pytest.mark.slow
def test_distill_stage_brings_student_closer_to_teacher_and_resumes(tmp_path):
    torch.manual_seed(0)
    teacher = DigitsCNN().eval()
    data = _cnn_data()
    student = DigitsStudent()
    before = _mean_kd(student, teacher, data)
    cfg = KnowledgeDistillation(epochs=4, lr=3e-3, alpha=1.0, hints=(Hint(student="features.3", teacher="features.3"),))
    out = shrink.distill(student, teacher, cfg, train=data, checkpoint_dir=tmp_path, progress=False)
    after = _mean_kd(out, teacher, data)
    assert after < 0.7 * before
    assert (tmp_path / "last.pt").exists()
    assert not any(m._forward_hooks for m in out.modules())
    assert (
        all(
            torch.equal(a, b)
            for a, b in zip(student.state_dict().values(), DigitsStudent().state_dict().values(), strict=True)
        )
        is False
    )
    # a finished run resumes from its last checkpoint: no further training, same weights
    again = shrink.distill(student, teacher, cfg, train=data, checkpoint_dir=tmp_path, progress=False)
    for a, b in zip(out.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_distill_stage_errors():
    with pytest.raises(ConfigError, match="teacher"):
        shrink.api.apply(DigitsStudent(), KnowledgeDistillation(epochs=1), shrink.Context(train=_cnn_data()))
    with pytest.raises(ConfigError, match="temperature"):
        KnowledgeDistillation(temperature=0)
    with pytest.raises(ConfigError, match="student_zoo"):
        shrink.distill(DigitsStudent(), DigitsCNN(), KnowledgeDistillation(student_zoo="nope"), train=_cnn_data())


def _tiny_bert(layers=4):
    from transformers import BertConfig, BertModel

    from shrink.zoo.minilm import MiniLMEmbedder

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        attn_implementation="eager",
    )
    return MiniLMEmbedder(BertModel(cfg)).eval()


def _token_batches(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1, 50, (8, 12), generator=g)
        mask = torch.ones_like(ids)
        mask[:4, 9:] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def test_student_from_every_other_teacher_layer():
    teacher = _tiny_bert(4)
    student = student_from_layers(teacher, [0, 2])
    layers = student.encoder.encoder.layer
    assert len(layers) == 2 and student.encoder.config.num_hidden_layers == 2
    assert teacher.encoder.config.num_hidden_layers == 4  # the teacher is untouched
    assert torch.equal(layers[1].output.dense.weight, teacher.encoder.encoder.layer[2].output.dense.weight)
    batch = _token_batches(1)[0]
    assert student(**batch).shape == teacher(**batch).shape
    with pytest.raises(ConfigError, match="keep_layers"):
        student_from_layers(teacher, [0, 7])


@pytest.mark.slow
def test_embedding_distill_with_attention_transfer_improves_cosine(tmp_path):
    teacher = _tiny_bert(4)
    data = _token_batches()
    hint = Hint(
        student="encoder.encoder.layer.1.attention.self",
        teacher="encoder.encoder.layer.3.attention.self",
        kind="attention_probs",
    )
    cfg = EmbeddingDistillation(keep_layers=(0, 2), data="calibration", epochs=6, lr=2e-3, hints=(hint,))
    ctx = shrink.Context(calibration=data, teacher=teacher, progress=False, checkpoint_dir=tmp_path)
    perturbed = copy.deepcopy(teacher)
    with torch.no_grad():
        for m in perturbed.modules():
            if isinstance(m, nn.Linear):
                m.weight.add_(0.3 * torch.randn_like(m.weight))
    start = student_from_layers(perturbed, [0, 2])

    def cosine(m):
        with torch.no_grad():
            return float(torch.cat([nn.functional.cosine_similarity(m(**b), teacher(**b)) for b in data]).mean())

    out = shrink.api.apply(perturbed, cfg, ctx)
    assert len(out.encoder.encoder.layer) == 2
    assert cosine(out) > cosine(start)
    assert any("calibration" in n for n in ctx.notes)
    with pytest.raises(DataError, match="calibration"):
        shrink.api.apply(teacher, EmbeddingDistillation(), shrink.Context(teacher=teacher, calibration=data))
