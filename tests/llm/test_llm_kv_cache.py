import pytest
import torch
from transformers import DynamicCache

from shrink.eval.language import greedy_tokens, token_agreement
from shrink.llm.kv_cache import GROW_TOKENS, Int8KVCache, cache_bytes, quantize_kv
from shrink.zoo.llm import tiny_llama


def test_quantize_kv_error_is_within_half_a_step():
    x = torch.randn(1, 2, 10, 64)
    codes, scale = quantize_kv(x)
    assert codes.dtype == torch.int8 and scale.shape == (1, 2, 10, 1)
    assert ((codes.float() * scale.float() - x).abs() <= scale.float() * 0.51 + 1e-3).all()
    assert codes.abs().amax(-1).eq(127).all()  # the largest entry of each vector gets the top code


def test_quantize_kv_of_zero_and_tiny_vectors_is_finite():
    x = torch.zeros(1, 1, 3, 64)
    x[0, 0, 1] = 1e-30
    x[0, 0, 2, 0] = -1e-6
    codes, scale = quantize_kv(x)
    assert (scale.float() > 0).all() and codes[0, 0, :2].eq(0).all()
    assert ((codes.float() * scale.float() - x).abs() <= scale.float() * 0.51).all()


def test_quantize_kv_leaves_its_input_alone():
    x = torch.randn(1, 2, 4, 64)
    before = x.clone()
    quantize_kv(x)
    assert x.equal(before)


def test_int8_cache_decodes_like_the_float_cache_with_4x_less_memory():
    model = tiny_llama(hidden=256, heads=4, kv_heads=2)  # head_dim 64, as in SmolLM2
    ids = torch.randint(0, 256, (1, 47))  # + 1 decoded token: 48, a whole number of GROW_TOKENS slots
    caches = {"int8": Int8KVCache(), "fp32": DynamicCache()}
    with torch.no_grad():
        for c in caches.values():
            model(input_ids=ids, past_key_values=c, use_cache=True)
        step = {k: model(input_ids=ids[:, :1], past_key_values=c, use_cache=True).logits for k, c in caches.items()}
    assert caches["int8"].get_seq_length() == caches["fp32"].get_seq_length() == 48
    ratio = cache_bytes(caches["fp32"]) / cache_bytes(caches["int8"])
    assert 3.85 < ratio < 4.0  # 4x less the float16 scale per (token, head)
    with torch.no_grad():  # one more token takes a new block of GROW_TOKENS slots, counted as allocated
        model(input_ids=ids[:, :1], past_key_values=caches["int8"], use_cache=True)
    per_token = cache_bytes(caches["int8"]) / (48 + GROW_TOKENS)
    assert per_token == pytest.approx(cache_bytes(caches["fp32"]) / 48 / ratio)
    assert (step["int8"] - step["fp32"]).abs().max() < 0.02 * step["fp32"].abs().max()


def test_int8_cache_in_generate_and_greedy_agreement():
    model = tiny_llama()
    prompts = [torch.randint(0, 256, (6,)) for _ in range(3)]
    ref = greedy_tokens(model, prompts, new_tokens=8)
    got = greedy_tokens(model, prompts, new_tokens=8, cache=Int8KVCache)
    assert token_agreement(ref, got) >= 0.9
    out = model.generate(prompts[0][None], max_new_tokens=5, do_sample=False, past_key_values=Int8KVCache())
    assert out.shape == (1, 11)


def test_perplexity_through_the_int8_cache_is_close_but_not_identical():
    from shrink.eval.language import perplexity

    model = tiny_llama(hidden=256, heads=4, kv_heads=2)
    ids = torch.randint(0, 256, (2, 32))
    base, kv8 = perplexity(model, ids), perplexity(model, ids, cache=Int8KVCache)
    assert kv8 != base and abs(kv8 / base - 1) < 0.01
    assert perplexity(model, ids, cache=DynamicCache) == pytest.approx(base, rel=1e-5)
