"""Causal language model metrics: perplexity on fixed-length windows, greedy-token agreement with a reference
model, prefill latency, decode tokens/s at batch 1, peak resident memory while running, and size on disk
(:func:`language_metrics` gathers the first three for :func:`shrink.evaluate`)."""

from __future__ import annotations

import inspect
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shrink.errors import DataError

__all__ = [
    "PROMPTS",
    "perplexity",
    "greedy_tokens",
    "token_agreement",
    "matching_prefix",
    "prefill_latency",
    "decode_step_times",
    "decode_tokens_per_s",
    "peak_rss",
    "file_size",
    "language_metrics",
]

#: fixed prompt set for greedy agreement: English prose and code
PROMPTS = (
    "The three most important things to know about photosynthesis are",
    "Once upon a time, in a small village by the sea,",
    'def merge_sorted(a, b):\n    """Merge two sorted lists into one sorted list."""\n',
    "To make a good cup of tea, you should first",
    "The difference between a list and a tuple in Python is",
    "import os\n\n\ndef list_python_files(root):\n",
    "The main causes of the French Revolution were",
    "Here is a short poem about autumn:\n",
)

CacheFactory = Callable[[], Any]


def _logits(model: nn.Module, ids: torch.Tensor, cache: CacheFactory | None) -> torch.Tensor:
    if cache is None:
        return model(input_ids=ids, use_cache=False).logits
    return model(input_ids=ids, past_key_values=cache(), use_cache=True).logits


def _last_only(model: Any) -> dict[str, int]:
    """``{"logits_to_keep": 1}`` where the model's forward takes it (transformers' causal LMs, their compiled
    forms, :class:`shrink.llm.OrtDecoder`), else nothing: a generation step needs the last position's logits
    alone, and transformers' ``generate`` asks for just those."""
    for _ in range(4):  # a wrapper (torch.compile's, shrink's CompiledInt8) is looked through to what it wraps
        call = model.forward if isinstance(model, nn.Module) else model.__call__
        try:
            params = inspect.signature(call).parameters.values()
        except (TypeError, ValueError):
            return {}
        if any(p.name == "logits_to_keep" for p in params):
            return {"logits_to_keep": 1}
        wrapped = getattr(model, "_orig_mod", None) or getattr(model, "model", None)
        if wrapped is None or any(p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
            return {}
        model = wrapped
    return {}


def _step(model: Any, ids: torch.Tensor, past: Any, keep: dict[str, int]) -> tuple[Any, torch.Tensor]:
    """One generation step (prefill or decode) at batch 1, ``keep`` from :func:`_last_only` (read once per loop,
    not per step): (the cache after it, the greedy next token [1, 1])."""
    res = model(input_ids=ids, past_key_values=past, use_cache=True, **keep)
    return res.past_key_values, res.logits[:, -1].argmax(-1, keepdim=True)


@torch.inference_mode()
def perplexity(model: nn.Module, windows: torch.Tensor, cache: CacheFactory | None = None) -> float:
    """exp(mean next-token NLL) over every window ([n, length] token ids), one window at a time. With ``cache``
    (a factory of KV caches), attention reads its keys and values back from that cache, as in decoding."""
    if windows.dim() != 2 or windows.shape[1] < 2:
        raise DataError(f"perplexity: windows must be [n, length>=2] token ids, got shape {tuple(windows.shape)}")
    nll, count = 0.0, 0
    for row in windows:
        logits = _logits(model, row[None], cache).float()
        loss = nn.functional.cross_entropy(logits[0, :-1], row[1:], reduction="sum")
        nll, count = nll + float(loss), count + row.numel() - 1
    return float(torch.exp(torch.tensor(nll / count)))


@torch.inference_mode()
def greedy_tokens(
    model: nn.Module, prompts: Sequence[torch.Tensor], new_tokens: int = 32, cache: CacheFactory | None = None
) -> list[torch.Tensor]:
    """The first ``new_tokens`` greedy tokens after each prompt (1-D token ids), decoded with a KV cache."""
    out, keep = [], _last_only(model)
    for ids in prompts:
        past, nxt = _step(model, ids[None], cache() if cache is not None else None, keep)
        tokens = []
        for _ in range(new_tokens):
            tokens.append(int(nxt))
            past, nxt = _step(model, nxt, past, keep)
        out.append(torch.tensor(tokens))
    return out


def token_agreement(reference: Sequence[torch.Tensor], other: Sequence[torch.Tensor]) -> float:
    """Fraction of positions where two greedy continuations pick the same token (position by position)."""
    if len(reference) != len(other) or not reference:
        raise DataError(f"token_agreement: {len(reference)} reference vs {len(other)} continuations")
    same = sum(int((a == b).sum()) for a, b in zip(reference, other, strict=True))
    return same / sum(a.numel() for a in reference)


def matching_prefix(reference: Sequence[torch.Tensor], other: Sequence[torch.Tensor]) -> float:
    """Mean fraction of each greedy continuation generated before its first token that differs from the reference
    (1.0: identical continuations). Unlike :func:`token_agreement`, positions after a divergence do not count: the
    two continuations are then about different text, and whether they line up again is chance."""
    if len(reference) != len(other) or not reference:
        raise DataError(f"matching_prefix: {len(reference)} reference vs {len(other)} continuations")
    fractions = []
    for a, b in zip(reference, other, strict=True):
        a, b = a.flatten(), b.flatten()
        if a.numel() != b.numel() or not a.numel():
            raise DataError(f"matching_prefix: continuations of {a.numel()} and {b.numel()} tokens")
        differ = (a != b).nonzero()
        fractions.append((int(differ[0]) if len(differ) else a.numel()) / a.numel())
    return sum(fractions) / len(fractions)


def _median_time(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@torch.inference_mode()
def prefill_latency(
    model: nn.Module,
    length: int = 512,
    repeats: int = 5,
    warmup: int = 2,
    vocab: int = 1000,
    cache: CacheFactory | None = None,
) -> float:
    """Median seconds of generation's first step over a ``length``-token prompt at batch 1, as transformers'
    ``generate`` runs it: one forward pass that fills a fresh KV cache (``cache``, a factory of caches; else the
    model's default) and computes the logits of the last position alone (``logits_to_keep=1`` where the model takes
    it), then picks the next token. The logits of the other positions, which scoring needs and generation does not,
    are not computed (with a vocabulary of tens of thousands of tokens, a large share of the pass)."""
    ids = torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(0))
    keep = _last_only(model)
    return _median_time(lambda: _step(model, ids, cache() if cache is not None else None, keep), repeats, warmup)


@torch.inference_mode()
def decode_step_times(
    model: nn.Module, prompt_len: int = 64, new_tokens: int = 32, cache: CacheFactory | None = None, vocab: int = 1000
) -> list[float]:
    """Seconds of each of ``new_tokens`` cached single-token greedy steps at batch 1, after a prefill of a
    ``prompt_len``-token prompt (not timed)."""
    ids = torch.randint(0, vocab, (1, prompt_len), generator=torch.Generator().manual_seed(0))
    keep = _last_only(model)
    past, nxt = _step(model, ids, cache() if cache is not None else None, keep)
    times = []
    for _ in range(new_tokens):
        t = time.perf_counter()
        past, nxt = _step(model, nxt, past, keep)
        times.append(time.perf_counter() - t)
    return times


def decode_tokens_per_s(
    model: nn.Module, prompt_len: int = 64, new_tokens: int = 32, cache: CacheFactory | None = None, vocab: int = 1000
) -> float:
    """Batch-1 decode speed: tokens/s from the median time of one cached single-token step after a prefill (a
    first, untimed run warms up, and compiles, for compiled models)."""
    decode_step_times(model, prompt_len, new_tokens, cache, vocab)
    return 1.0 / statistics.median(decode_step_times(model, prompt_len, new_tokens, cache, vocab))


def peak_rss(fn: Callable[[], Any], interval_s: float = 0.002) -> tuple[Any, int]:
    """Run ``fn`` and return (its result, the peak resident set size of this process in bytes while it ran),
    sampled every ``interval_s`` by a background thread."""
    import psutil

    proc, peak, done = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = fn()
    finally:
        done.set()
        thread.join()
    return result, max(peak[0], proc.memory_info().rss)


def file_size(model: nn.Module) -> int:
    """Bytes of the model's state dict saved with torch.save (packed integer buffers count at their real size);
    a weight shared by two modules (tied embeddings) is stored once."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "model.pt")
        torch.save(model.state_dict(), path)
        return path.stat().st_size


def language_metrics(
    models: Mapping[str, Any],
    windows: torch.Tensor,
    prompts: Sequence[torch.Tensor],
    reference: str,
    new_tokens: int = 32,
    progress: bool = False,
) -> dict[str, tuple[dict[str, float], list[torch.Tensor]]]:
    """Per model: {perplexity, token agreement and matching prefix (with ``reference``'s greedy tokens), decode tok/s}
    and its greedy tokens for each prompt. Decoding speed: batch 1, after a 64-token prompt, median of 16 steps."""
    from tqdm.auto import tqdm

    vocab = int(windows.max()) + 1
    ref = greedy_tokens(models[reference], prompts, new_tokens)
    out = {}
    for name, model in tqdm(models.items(), desc="perplexity", disable=not progress, leave=False):
        tokens = ref if name == reference else greedy_tokens(model, prompts, new_tokens)
        metrics = {
            "perplexity": perplexity(model, windows),
            "token agreement": token_agreement(ref, tokens),
            "matching prefix": matching_prefix(ref, tokens),
            "decode tok/s": decode_tokens_per_s(model, 64, 16, vocab=vocab),
        }
        out[name] = (metrics, tokens)
    return out
