import pytest
import torch

from shrink.errors import DataError
from shrink.eval.language import (
    decode_tokens_per_s,
    file_size,
    greedy_tokens,
    matching_prefix,
    peak_rss,
    perplexity,
    prefill_latency,
    token_agreement,
)
from shrink.quant.runtimes.torch_token import CompiledInt8
from shrink.zoo.llm import tiny_llama


def test_perplexity_matches_cross_entropy():
    model = tiny_llama()
    ids = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 256), ids[:, 1:].reshape(-1))
    assert perplexity(model, ids) == pytest.approx(float(nll.exp()), rel=1e-4)
    with pytest.raises(DataError, match="windows"):
        perplexity(model, ids[0])


def test_greedy_tokens_match_generate_and_agreement_counts_positions():
    model = tiny_llama()
    prompt = torch.randint(0, 256, (5,))
    ours = greedy_tokens(model, [prompt], new_tokens=6)[0]
    ref = model.generate(prompt[None], max_new_tokens=6, min_new_tokens=6, do_sample=False)[0, 5:]
    assert torch.equal(ours, ref)
    other = ours.clone()
    other[3:] = (other[3:] + 1) % 256
    assert token_agreement([ours], [other]) == pytest.approx(0.5)
    other[5] = ours[5]  # lines up again after diverging: counts for agreement, not for the prefix
    assert token_agreement([ours], [other]) == pytest.approx(4 / 6)
    assert matching_prefix([ours, ours], [other, ours]) == pytest.approx((3 / 6 + 1) / 2)
    with pytest.raises(DataError, match="matching_prefix"):
        matching_prefix([ours], [ours[:3]])


def test_speed_memory_and_size_are_positive_and_consistent():
    model = tiny_llama()
    assert 0 < prefill_latency(model, length=32, repeats=2, warmup=1, vocab=256) < 5
    assert decode_tokens_per_s(model, prompt_len=8, new_tokens=4, vocab=256) > 1
    params = sum(p.numel() for p in model.parameters())  # tied embedding counted once
    assert params * 4 <= file_size(model) < params * 4 * 1.1
    result, rss = peak_rss(lambda: torch.ones(64, 1024, 1024).sum().item())  # 256 MiB while it runs
    assert result == 64 * 1024 * 1024 and rss > 256 * 2**20


class _NoKeep(torch.nn.Module):
    """A causal LM whose forward has no ``logits_to_keep``: the metrics must not pass it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, past_key_values=None, use_cache=True):
        return self.model(input_ids=input_ids, past_key_values=past_key_values, use_cache=use_cache)


def test_generation_steps_compute_the_last_logits_alone_where_the_model_allows():
    model = tiny_llama()
    rows: list[int] = []
    model.lm_head.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[1]))
    prefill_latency(model, length=32, repeats=1, warmup=0, vocab=256)
    assert rows == [1]  # as generate's first step: not the 32 positions' logits
    rows.clear()
    prompt = torch.arange(5)
    ours = greedy_tokens(model, [prompt], new_tokens=3)[0]
    assert rows == [1] * 4  # the prefill and three decoding steps
    rows.clear()
    assert torch.equal(greedy_tokens(_NoKeep(model), [prompt], new_tokens=3)[0], ours)
    assert rows == [5, 1, 1, 1]  # a forward without logits_to_keep computes them all, same tokens
    rows.clear()
    wrapped = CompiledInt8(model, model)  # shrink's compiled wrapper (forward(*args, **kwargs)) is looked through
    assert torch.equal(greedy_tokens(wrapped, [prompt], new_tokens=3)[0], ours)
    assert rows == [1] * 4
