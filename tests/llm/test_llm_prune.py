import pytest
import torch

from shrink.errors import ConfigError, DataError
from shrink.eval.language import perplexity
from shrink.llm.prune import prune_llama, recover
from shrink.zoo.llm import tiny_llama


def _model():
    return tiny_llama(hidden=128, heads=8, kv_heads=2, intermediate=256)  # 4 query heads per key/value head


def test_pruning_removes_a_quarter_of_channels_and_heads_per_gqa_group():
    model = _model()
    small = prune_llama(model, 0.25, 0.25)
    attn, mlp = small.model.layers[0].self_attn, small.model.layers[1].mlp
    assert mlp.gate_proj.out_features == 192 and mlp.down_proj.in_features == 192
    assert attn.q_proj.out_features == 6 * 16 and attn.o_proj.in_features == 6 * 16  # 3 of 4 heads per group
    assert attn.k_proj.out_features == 2 * 16 and attn.num_key_value_groups == 3
    assert small.config.num_attention_heads == 6 and small.config.intermediate_size == 192
    assert model.model.layers[0].self_attn.q_proj.out_features == 128  # input untouched
    ids = torch.randint(0, 256, (2, 24))
    assert small(input_ids=ids).logits.shape == (2, 24, 256)
    params = lambda m: sum(p.numel() for p in m.model.layers.parameters())  # noqa: E731
    assert params(small) < 0.8 * params(model)


def test_pruning_nothing_keeps_the_function():
    model = _model()
    same = prune_llama(model, 0.0, 0.0)
    ids = torch.randint(0, 256, (1, 16))
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, same(input_ids=ids).logits, atol=1e-5)
    with pytest.raises(ConfigError, match="ratios"):
        prune_llama(model, 1.0)


def _kl(teacher, student, windows):
    from shrink.distillation.losses import kd_loss

    with torch.no_grad():
        return sum(float(kd_loss(student(input_ids=w[None]).logits[0], teacher(input_ids=w[None]).logits[0], 1.0))
                   for w in windows)  # fmt: skip


def test_distillation_moves_the_pruned_model_toward_the_teacher():
    torch.manual_seed(0)
    teacher = _model()
    windows = [torch.randint(0, 256, (32,)) for _ in range(4)]
    recover(teacher, windows, steps=20, mode="hard", lr=3e-3)  # a teacher with something to teach
    pruned = prune_llama(teacher, 0.5, 0.5)
    before = _kl(teacher, pruned, windows)
    kd = recover(pruned, windows, steps=10, teacher=teacher, mode="kd", lr=1e-4)
    assert _kl(teacher, pruned, windows) < 0.5 * before and len(kd["losses"]) == 10
    hard = prune_llama(teacher, 0.5, 0.5)
    ppl = perplexity(hard, torch.stack(windows))
    recover(hard, windows, steps=10, mode="hard", lr=1e-4)
    assert perplexity(hard, torch.stack(windows)) < ppl
    with pytest.raises(ConfigError, match="teacher"):
        recover(pruned, windows, steps=1, mode="kd")


def test_activation_aware_ranking_reads_calibration_and_keeps_the_layout():
    torch.manual_seed(0)
    model = _model()
    windows = [torch.randint(0, 256, (24,)) for _ in range(3)]
    plain, aware = prune_llama(model, 0.25, 0.25), prune_llama(model, 0.25, 0.25, calibration=windows)
    a, b = plain.model.layers[0].mlp.down_proj, aware.model.layers[0].mlp.down_proj
    assert a.in_features == b.in_features == 192
    assert not torch.equal(a.weight, b.weight)  # a different choice of channels
    ids = torch.randint(0, 256, (1, 16))
    assert aware(input_ids=ids).logits.shape == (1, 16, 256)
    with pytest.raises(DataError, match="calibration"):
        prune_llama(model, 0.25, 0.25, calibration=[])
