"""An int8 key/value cache for transformers decoders: keys and values are stored as int8 codes with one float16
scale per (token, head) — symmetric, over the head dimension — so new tokens are written in place without
re-quantizing what is stored (no float residual window, unlike transformers' ``QuantizedCache``, whose backends
are not installed here).

Storage per cached vector of ``head_dim`` floats: ``head_dim`` bytes + 2 bytes of scale, against ``4 * head_dim``
bytes in float32 (3.88x smaller at head_dim 64). Attention still runs in float on the de-quantized states.

Each step's append (quantize the new token, de-quantize the cache for attention) runs in one call of a small C++
kernel (:mod:`shrink.llm.kv_kernel`, built on first use) for float32 states on the CPU, and otherwise as PyTorch
tensor operations; both give the same codes, scales and states, bit for bit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

from shrink.llm.kv_kernel import KVKernel, load_kv_kernel

__all__ = ["GROW_TOKENS", "MIN_SCALE", "Int8KVLayer", "Int8KVCache", "quantize_kv", "cache_bytes"]


#: smallest scale stored: float16's smallest normal number (an all-zero vector then gets codes 0, not 0 / 0)
MIN_SCALE = 2.0**-14


def quantize_kv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 codes and float16 scales [..., 1] of ``x`` [batch, heads, tokens, head_dim], per (token, head); the codes
    are rounded against the float16 scale that is stored, so de-quantizing is off by at most half a step."""
    scale = _scales(x)
    return _codes(x.to(torch.float32, copy=True), scale).to(torch.int8), scale


def _scales(x: torch.Tensor) -> torch.Tensor:
    return (x.abs().amax(-1, keepdim=True).float() / 127.0).clamp_(min=MIN_SCALE).to(torch.float16)


def _codes(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Rounded ``x / scale``, overwriting ``x`` (float): within [-127, 127] since the float16 scale is within
    float16's rounding (2**-11) of max |x| / 127."""
    return x.div_(scale).round_()


#: the cache grows by this many tokens at a time (appending writes in place; at most this many slots are spare)
GROW_TOKENS = 16


class Int8KVLayer(DynamicLayer):
    """One decoder layer's cache: keys and values stacked as int8 codes [2, batch, heads, capacity, head_dim] with
    per-(token, head) scales, written in place and grown by :data:`GROW_TOKENS` slots at a time. Each step quantizes
    the new keys and values into the cache and de-quantizes the whole cache for attention: in one call of the fused
    kernel (``kernel`` "fused", or "auto" where it builds) for float32 CPU states, else with PyTorch operations."""

    def __init__(self, kernel: KVKernel = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        module = load_kv_kernel(kernel)
        self._append: Callable[..., torch.Tensor] | None = None if module is None else module.kv_append

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.codes: torch.Tensor | None = None
        self.scales: torch.Tensor | None = None
        self.length = 0

    def _reserve(self, tokens: int) -> None:
        assert self.codes is not None and self.scales is not None
        if tokens <= self.codes.shape[-2]:
            return
        capacity = -(-tokens // GROW_TOKENS) * GROW_TOKENS
        grown = [t.new_zeros(*t.shape[:-2], capacity, t.shape[-1]) for t in (self.codes, self.scales)]
        for new, old in zip(grown, (self.codes, self.scales), strict=True):
            new[..., : self.length, :] = old[..., : self.length, :]
        self.codes, self.scales = grown

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):  # noqa: ANN201
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.codes is None:
            shape = (2, *key_states.shape[:-2], 0)
            self.codes = key_states.new_zeros(*shape, key_states.shape[-1], dtype=torch.int8)
            self.scales = key_states.new_zeros(*shape, 1, dtype=torch.float16)
        n, end = self.length, self.length + key_states.shape[-2]
        self._reserve(end)
        assert self.codes is not None and self.scales is not None
        if self._append is not None and _fusable(key_states, value_states):
            cached = self._append(self.codes, self.scales, key_states, value_states, n)
            self.length = end
            return cached[0], cached[1]
        states = torch.stack([key_states, value_states]).float()
        scale = self.scales[..., n:end, :]
        scale.copy_(_scales(states))
        self.codes[..., n:end, :] = _codes(states, scale)
        self.length = end
        cached = self.codes[..., :end, :].to(self.dtype).mul_(self.scales[..., :end, :])
        return cached[0], cached[1]

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def reset(self) -> None:
        super().reset()
        self.codes = self.scales = None
        self.length = 0

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("Int8KVLayer: cropping is not supported")

    def nbytes(self) -> int:
        """Bytes allocated for codes and scales (spare slots included)."""
        if not self.is_initialized or self.codes is None or self.scales is None:
            return 0
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scales))


def _fusable(key: torch.Tensor, value: torch.Tensor) -> bool:
    return all(t.dtype == torch.float32 and t.device.type == "cpu" for t in (key, value))


class Int8KVCache(Cache):
    """A transformers ``Cache`` whose layers store int8 keys and values (:class:`Int8KVLayer`); pass it as
    ``past_key_values=Int8KVCache()`` to a model's forward or to ``generate``. ``kernel`` chooses how each step
    appends: "auto" (the fused C++ kernel where it builds, else PyTorch operations with one warning), "fused" (an
    error where it cannot be built) or "eager"; all three store and return the same values."""

    def __init__(self, kernel: KVKernel = "auto") -> None:
        load_kv_kernel(kernel)  # a bad name, or "fused" that cannot be built, fails here rather than mid-forward
        super().__init__(layer_class_to_replicate=functools.partial(Int8KVLayer, kernel))  # type: ignore[arg-type]
        self.kernel = kernel

    def fused(self) -> bool:
        """Whether this cache's layers append with the fused kernel (for reports: which kernel ran)."""
        return load_kv_kernel(self.kernel) is not None


def cache_bytes(cache: Cache) -> int:
    """Bytes the cache holds in keys and values (codes and scales for :class:`Int8KVCache`)."""
    total = 0
    for layer in cache.layers:
        if isinstance(layer, Int8KVLayer):
            total += layer.nbytes()
        else:
            keys = getattr(layer, "keys", None)
            if isinstance(keys, torch.Tensor):
                total += keys.numel() * keys.element_size() * 2
    return total
