import pytest
import torch
from torch import nn

from shrink.errors import ConfigError
from shrink.llm.rotate import hadamard, random_orthogonal, rotate_llama
from shrink.llm.weight_only import quantize_weight_only
from shrink.zoo.llm import tiny_llama


@pytest.mark.parametrize("n", [1, 2, 4, 12, 20, 24, 48, 64, 576, 960])
def test_hadamard_orders_the_constructions_reach(n):
    h = hadamard(n)
    assert h is not None and h.shape == (n, n)
    assert set(h.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(h @ h.T, n * torch.eye(n, dtype=torch.float64))


@pytest.mark.parametrize("n", [3, 6, 36, 100])
def test_hadamard_is_none_where_neither_construction_reaches(n):
    assert hadamard(n) is None


def test_random_orthogonal_is_orthogonal_and_seeded():
    a = random_orthogonal(36, torch.Generator().manual_seed(3))
    b = random_orthogonal(36, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.allclose(a @ a.T, torch.eye(36, dtype=torch.float64), atol=1e-12)


def _model_with_norm_gains(**kwargs) -> nn.Module:
    model = tiny_llama(**kwargs)
    g = torch.Generator().manual_seed(5)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.data = 0.5 + torch.rand(p.shape, generator=g)  # folding a norm's gain must be exercised
    return model


@pytest.mark.parametrize("hidden,q_heads,heads", [(64, 4, True), (48, 4, True), (36, 2, True), (64, 4, False)])
def test_rotation_keeps_the_function_and_leaves_the_original_alone(hidden, q_heads, heads):
    model = _model_with_norm_gains(hidden=hidden, heads=q_heads, kv_heads=2 if q_heads == 4 else 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))
    rotated, how = rotate_llama(model, seed=1, heads=heads)
    assert torch.allclose(rotated(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-4)
    assert how.residual == ("random orthogonal" if hidden == 36 else "hadamard")
    assert how.heads == ("none" if not heads else "random orthogonal" if hidden == 36 else "hadamard")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied in the original
    assert rotated.lm_head.weight is not rotated.model.embed_tokens.weight
    assert not rotated.config.tie_word_embeddings and model.config.tie_word_embeddings
    for name, p in rotated.named_parameters():
        if name.endswith("norm.weight"):
            assert torch.equal(p, torch.ones_like(p))
    # the stream really is rotated: the embedding rows are not the original ones
    assert not torch.allclose(rotated.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_rotation_spreads_a_weight_outlier_across_the_group():
    model = tiny_llama(hidden=64)
    w = model.model.layers[0].mlp.up_proj.weight.data
    w[:, 7] *= 50.0  # one input channel carries an outlier in every row
    rotated, _ = rotate_llama(model)
    peak = lambda t: float((t.abs().amax(1) / t.pow(2).mean(1).sqrt()).mean())  # noqa: E731
    assert peak(rotated.model.layers[0].mlp.up_proj.weight.data) < 0.5 * peak(w)


def test_rotated_model_quantizes_and_keeps_the_tokens_path():
    model = _model_with_norm_gains()
    rotated, _ = rotate_llama(model)
    windows = [torch.randint(0, 256, (32,), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    q = quantize_weight_only(rotated, 4, 32, "gptq", windows)
    ids = windows[0].reshape(1, -1)
    ref = model(input_ids=ids).logits
    assert (q(input_ids=ids).logits - ref).norm() / ref.norm() < 0.2


def test_rotation_refuses_what_it_cannot_rotate():
    with pytest.raises(ConfigError, match="Llama-style"):
        rotate_llama(nn.Linear(4, 4))
    model = tiny_llama()
    model.model.layers[1].post_attention_layernorm = nn.LayerNorm(64)
    with pytest.raises(ConfigError, match="layer 1 post_attention_layernorm is LayerNorm"):
        rotate_llama(model)
    model = tiny_llama()
    del model.model.layers[0].mlp.up_proj
    with pytest.raises(ConfigError, match="layer 0 has no mlp.up_proj"):
        rotate_llama(model)


def test_rotation_notices_a_block_it_does_not_account_for():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    class CenteredRMSNorm(LlamaRMSNorm):  # named like an RMSNorm, but subtracts the mean: rotations do not commute
        def forward(self, x):
            return super().forward(x - x.mean(-1, keepdim=True))

    model = tiny_llama()
    model.model.layers[0].input_layernorm = CenteredRMSNorm(64)
    with pytest.raises(ConfigError, match="logits differ"):
        rotate_llama(model)
