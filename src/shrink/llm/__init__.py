"""Decoder-LLM compression: weight-only int8 / int4 on PyTorch's packed-weight kernels (optionally after rotations
folded into the weights), an int8 KV cache, W8A8 on the int8 GEMM path, structured pruning with distillation,
export to ONNX Runtime (float or int4 ``MatMulNBits``) with the KV cache as graph inputs, and the metrics that
judge them."""

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
from shrink.llm.kv_cache import Int8KVCache, cache_bytes
from shrink.llm.onnx import OrtDecoder, export_decoder
from shrink.llm.rotate import rotate_llama
from shrink.llm.weight_only import Int4WeightLinear, Int8WeightLinear, quantize_weight_only

__all__ = [
    "Int8KVCache",
    "cache_bytes",
    "export_decoder",
    "OrtDecoder",
    "decode_tokens_per_s",
    "file_size",
    "greedy_tokens",
    "peak_rss",
    "perplexity",
    "prefill_latency",
    "token_agreement",
    "matching_prefix",
    "Int4WeightLinear",
    "Int8WeightLinear",
    "quantize_weight_only",
    "rotate_llama",
]
