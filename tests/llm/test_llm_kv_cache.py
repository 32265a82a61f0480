import pytest
import torch
from transformers import DynamicCache

from shrink.eval.language import greedy_tokens, token_agreement
from shrink.llm import kv_kernel
from shrink.llm.kv_cache import GROW_TOKENS, Int8KVCache, Int8KVLayer, cache_bytes, quantize_kv
from shrink.zoo.llm import tiny_llama

needs_kernel = pytest.mark.skipif(
    kv_kernel.kv_kernel_error() is not None, reason=f"no C++ toolchain: {kv_kernel.kv_kernel_error()}"
)


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


@needs_kernel
@pytest.mark.parametrize(("batch", "heads", "dim"), [(1, 3, 64), (2, 4, 32)])
def test_fused_append_stores_and_returns_what_the_eager_operations_do_bit_for_bit(batch, heads, dim):
    torch.manual_seed(0)
    fused, eager = Int8KVLayer("fused"), Int8KVLayer("eager")
    assert fused._append is not None and eager._append is None
    for tokens in (37, 1, 1, 20, 1):  # a prompt, decoding steps, a chunk that grows the cache past GROW_TOKENS
        # keys as attention makes them (a transposed view, not contiguous); values with zero and tiny vectors
        key = torch.randn(batch, tokens, heads, dim).transpose(1, 2)
        value = torch.randn(batch, heads, tokens, dim) * 3
        value[..., 0, :] = 0.0
        value[..., -1, :] *= 1e-30
        got, want = fused.update(key, value), eager.update(key, value)
        assert all(g.equal(w) for g, w in zip(got, want, strict=True))
        assert fused.codes.equal(eager.codes) and fused.scales.equal(eager.scales)
        assert fused.get_seq_length() == eager.get_seq_length()


@needs_kernel
def test_fused_cache_decodes_like_the_eager_one_in_a_model():
    model = tiny_llama(hidden=256, heads=4, kv_heads=2)
    prompts = [torch.randint(0, 256, (9,)) for _ in range(2)]
    fused = greedy_tokens(model, prompts, new_tokens=6, cache=lambda: Int8KVCache("fused"))
    eager = greedy_tokens(model, prompts, new_tokens=6, cache=lambda: Int8KVCache("eager"))
    assert all(f.equal(e) for f, e in zip(fused, eager, strict=True))
    assert Int8KVCache("fused").fused() and not Int8KVCache("eager").fused()


def test_a_cache_in_bfloat16_appends_with_the_eager_operations():
    layer = Int8KVLayer()
    key = torch.randn(1, 2, 5, 64, dtype=torch.bfloat16)
    keys, _ = layer.update(key, key)
    assert keys.dtype == torch.bfloat16 and layer.codes.dtype == torch.int8
    assert (keys.float() - key.float()).abs().max() <= layer.scales.float().max()


def test_a_kernel_that_cannot_be_built_falls_back_with_one_warning_or_fails_loudly(monkeypatch):
    kv_kernel._warn_once.cache_clear()
    monkeypatch.setattr(kv_kernel, "_build", lambda: (None, "OSError: no compiler"))
    with pytest.warns(RuntimeWarning, match="no compiler"):
        cache = Int8KVCache()
    assert not cache.fused()
    model = tiny_llama()
    ids = torch.randint(0, 256, (1, 8))
    with torch.no_grad():
        model(input_ids=ids, past_key_values=cache, use_cache=True)
    assert cache.get_seq_length() == 8
    with pytest.raises(RuntimeError, match="could not be built: OSError: no compiler"):
        Int8KVCache("fused")
    with pytest.raises(ValueError, match="kernel must be one of auto, fused, eager"):
        Int8KVCache("fast")  # type: ignore[arg-type]
    kv_kernel._warn_once.cache_clear()
