"""Decoder LLMs on ONNX Runtime: export a transformers causal LM with its key/value cache as explicit graph inputs
and outputs, and run the file as the model's drop-in for generation and the language metrics.

The graph takes ``input_ids`` [1, new], ``logit_positions`` (int64 [kept]: which of the new positions get logits --
all of them to score a text, the last alone to generate, as transformers' ``logits_to_keep``) and, per layer,
``past_key_<i>`` / ``past_value_<i>`` [1, kv heads, past, head dim] (``past`` may be 0: a prefill), and returns
``logits`` [1, kept, vocab] and ``present_key_<i>`` / ``present_value_<i>`` (past + new tokens). Float Linears
stay float MatMuls; weight-only layers (:func:`shrink.llm.quantize_weight_only`) become ONNX Runtime's
``MatMulNBits`` with the same codes, scales and AWQ input factors, so the file holds four or eight bits per weight:
int4 as it is, int8 (one scale per output channel) as 8-bit blocks that all repeat their channel's scale -- the
same grid. ``compute="int8"`` lets ONNX Runtime quantize blocks of the input to int8 at run
time and use integer dot products; ``"float"`` computes in float on the unpacked weights. ``optimize`` (the
default) writes attention with constant shapes and runs the passes of :mod:`shrink.llm.onnx_graph`: the same
numbers with far fewer operators per token.
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn
from transformers import AttentionInterface, DynamicCache
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from shrink._atomic import atomic_write_bytes
from shrink.errors import ConfigError, DataError, UnsupportedOpError
from shrink.export.onnx import write_onnx
from shrink.llm.onnx_graph import fuse_shared_input_matmuls, simplify
from shrink.quant.layers.convert import set_module
from shrink.quant.layers.packed import pack_int4, pack_zero_points
from shrink.quant.onnx.nbits import ACCURACY_LEVELS, MatMulNBitsFunction
from shrink.quant.runtimes.torch_weight_only import Int4WeightLinear, Int8WeightLinear

__all__ = ["OrtCache", "OrtDecoder", "export_decoder"]

#: opset of the exported decoder (ONNX Runtime's contrib ops come from the ``com.microsoft`` domain)
OPSET = 17


class _NBitsBlocks(nn.Module):
    """A weight-only layer for export as one ``MatMulNBits`` (``blocks``, ``scales`` and, on an asymmetric int4 grid,
    ``zero_points``), its input factors applied first."""

    blocks: torch.Tensor
    scales: torch.Tensor
    zero_points: torch.Tensor | None
    bias: torch.Tensor | None
    input_scale: torch.Tensor | None

    def __init__(
        self,
        layer: Int4WeightLinear | Int8WeightLinear,
        compute: str,
        blocks: torch.Tensor,
        scales: torch.Tensor,
        bits: int,
        zero_points: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("blocks", blocks)
        self.register_buffer("scales", scales.contiguous())
        self.register_buffer("zero_points", zero_points)
        self.register_buffer("bias", layer.bias)
        self.register_buffer("input_scale", layer.input_scale)
        self.level, self.bits = ACCURACY_LEVELS[compute], bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale is not None:
            x = x * self.input_scale
        return MatMulNBitsFunction.apply(
            x, self.blocks, self.scales, self.bias, self.level, self.bits, self.zero_points
        )


def _int4_blocks(layer: Int4WeightLinear, compute: str) -> _NBitsBlocks:
    """An :class:`Int4WeightLinear` for export: its codes as 4-bit MatMulNBits blocks (one per group) with its scales
    and, on an asymmetric grid, each block's zero point, so that ONNX Runtime computes ``(code - zero) * scale`` as
    PyTorch's kernel does."""
    g, out, k = layer.group_size, layer.out_features, layer.in_features
    scales, term = (layer.scales_zeros[..., i].T.float() for i in (0, 1))  # [out, groups]
    codes = torch.round((layer.dequantize() - term.repeat_interleave(g, 1)) / scales.repeat_interleave(g, 1))
    blocks = pack_int4(codes.clamp(-8, 7).to(torch.int8)).reshape(out, k // g, g // 2)
    zeros = layer.zero_points
    return _NBitsBlocks(layer, compute, blocks, scales, 4, None if zeros is None else pack_zero_points(zeros))


#: largest block of inputs per 8-bit MatMulNBits scale this export writes (ONNX Runtime reads 16 to 256)
INT8_BLOCK = 128


def _int8_blocks(layer: Int8WeightLinear, compute: str) -> _NBitsBlocks:
    """An :class:`Int8WeightLinear` for export: its codes (offset by 128) as 8-bit MatMulNBits blocks of up to
    :data:`INT8_BLOCK` inputs, each block carrying its output channel's scale."""
    k = layer.in_features
    block = next((b for b in (INT8_BLOCK >> i for i in range(4)) if k % b == 0), None)
    if block is None:
        raise UnsupportedOpError(f"export_decoder: {k} inputs is not a multiple of 16 (MatMulNBits blocks)")
    codes = (layer.weight_int8.to(torch.int16) + 128).to(torch.uint8)
    blocks = codes.reshape(layer.out_features, k // block, block)
    return _NBitsBlocks(layer, compute, blocks, layer.scales.float()[:, None].expand(-1, k // block), 8)


#: the attention the exported graph computes (registered with transformers under this name, with sdpa's masks)
ONNX_ATTENTION = "shrink_onnx"


def _onnx_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention at batch 1 written for the ONNX tracer: shapes from the config (constants in the graph, where
    torch's ``scaled_dot_product_attention`` exports a dozen shape operators per layer); grouped-query attention by
    folding the query heads that share a key/value head into rows (no copies of the keys and values). Sliding
    windows come with the mask; logit soft-capping and attention sinks are refused."""
    unsupported = sorted(k for k in ("softcap", "s_aux", "sinks") if kwargs.get(k) is not None)
    if unsupported:
        raise UnsupportedOpError(f"export_decoder: attention with {unsupported} is not written; use optimize=False")
    config: Any = module.config
    heads, (_layers, kv_heads, dim) = int(config.num_attention_heads), _cache_shape(config)
    scores = torch.matmul(query.reshape(1, kv_heads, -1, dim), key.transpose(-1, -2)) * (scaling or dim**-0.5)
    if attention_mask is not None:  # sdpa's mask: True where a position is seen
        bias = torch.where(attention_mask, 0.0, torch.finfo(scores.dtype).min).to(scores.dtype)
        scores = scores + bias.repeat(1, 1, heads // kv_heads, 1)
    out = torch.matmul(torch.softmax(scores, dim=-1), value)
    return out.reshape(1, heads, -1, dim).transpose(1, 2), None


AttentionInterface.register(ONNX_ATTENTION, _onnx_attention)
AttentionMaskInterface.register(ONNX_ATTENTION, sdpa_mask)


class _DecoderWithPast(nn.Module):
    """``model`` with the cache as flat tensors: (input_ids, logit_positions, k0, v0, k1, v1, ...) -> (logits, k0',
    v0', ...); ``logit_positions`` (int64 [n]) picks the new positions whose logits are computed."""

    def __init__(self, model: nn.Module, layers: int) -> None:
        super().__init__()
        self.model, self.layers = model, layers

    def forward(
        self, input_ids: torch.Tensor, logit_positions: torch.Tensor, *past: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=logit_positions)
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)


def _cache_shape(config: Any) -> tuple[int, int, int]:
    """(layers, key/value heads, head dim) of a transformers decoder config."""
    try:
        layers, heads = int(config.num_hidden_layers), int(config.num_attention_heads)
        kv = int(getattr(config, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    except AttributeError as exc:
        raise UnsupportedOpError(f"export_decoder: the model's config has no decoder shape ({exc})") from exc
    return layers, kv, head_dim


def _names(layers: int, prefix: str) -> list[str]:
    return [f"{prefix}_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]


@torch.no_grad()
def export_decoder(
    model: nn.Module, path: str | os.PathLike[str], compute: str = "int8", opset: int = OPSET, optimize: bool = True
) -> Path:
    """Write ``model`` (a transformers causal LM: float, or with int8 / int4 weight-only layers) to ONNX at ``path``
    with the KV cache as inputs and outputs (see the module docstring). ``optimize``: MatMuls sharing an input fused
    and the shape arithmetic folded (:mod:`shrink.llm.onnx_graph`; the same numbers, fewer operators per token).
    The model itself is not changed; the file is written through a temporary name, so a failed export leaves
    nothing behind."""
    if compute not in ACCURACY_LEVELS:
        raise ConfigError(f"export_decoder: compute must be one of {sorted(ACCURACY_LEVELS)}, got {compute!r}")
    config: Any = getattr(model, "config", None)
    layers, kv, head_dim = _cache_shape(config)
    out = copy.deepcopy(model).eval()
    if optimize:
        exported: Any = out.config
        exported._attn_implementation = ONNX_ATTENTION
    for name, m in list(out.named_modules()):
        if isinstance(m, Int4WeightLinear):
            set_module(out, name, _int4_blocks(m, compute))
        elif isinstance(m, Int8WeightLinear):
            set_module(out, name, _int8_blocks(m, compute))
    wrapper = _DecoderWithPast(out, layers)
    vocab = int(config.vocab_size)
    ids = torch.randint(0, vocab, (1, 3), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(1, 3)
    past = [torch.zeros(1, kv, 2, head_dim) for _ in range(2 * layers)]
    inputs = ["input_ids", "logit_positions", *_names(layers, "past")]
    outputs = ["logits", *_names(layers, "present")]
    dynamic = {"input_ids": {1: "new"}, "logit_positions": {0: "kept"}, "logits": {1: "kept"}}
    dynamic |= {n: {2: "past"} for n in inputs[2:]} | {n: {2: "total"} for n in outputs[1:]}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # the tracer warns about the cache's Python branches; the graph is checked against eager by the tests
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        raw = write_onnx(wrapper, (ids, positions, *past), path.with_name(f".{path.name}.raw"), inputs, outputs,
                         dynamic, opset)  # fmt: skip
    try:
        graph = onnx.load(str(raw))
        if optimize:
            fuse_shared_input_matmuls(graph)
            graph = simplify(graph)
        atomic_write_bytes(path, graph.SerializeToString())
    finally:
        raw.unlink(missing_ok=True)
    return path


@dataclass
class OrtCache:
    """The key/value arrays an :class:`OrtDecoder` carries from one call to the next (empty before a prefill)."""

    arrays: list[np.ndarray] = field(default_factory=list)

    def get_seq_length(self) -> int:
        return int(self.arrays[0].shape[2]) if self.arrays else 0

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)


@dataclass
class OrtOutput:
    logits: torch.Tensor
    past_key_values: OrtCache


class OrtDecoder:
    """An ONNX file from :func:`export_decoder` on ONNX Runtime (CPU), called like the transformers model it came
    from: ``decoder(input_ids=ids, past_key_values=cache, use_cache=True)`` returns ``.logits`` (a torch tensor) and
    ``.past_key_values`` (an :class:`OrtCache`; pass ``decoder.new_cache()`` or None to start). Batch 1."""

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"OrtDecoder: no ONNX file at {self.path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # the pool's workers stop spinning when a run ends: several decoders in one process (a benchmark) would
        # otherwise take the cores of whatever runs next with their idle spinning (see shrink.export.onnx.OnnxModel)
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        if self.inputs[:2] != ["input_ids", "logit_positions"] or len(self.inputs) % 2:
            raise DataError(f"OrtDecoder: {self.path} is not a decoder from export_decoder (inputs {self.inputs[:3]})")
        shape = self.session.get_inputs()[2].shape
        self.kv_heads, self.head_dim = int(shape[1]), int(shape[3])
        self.layers = (len(self.inputs) - 2) // 2

    def new_cache(self) -> OrtCache:
        return OrtCache()

    def __call__(
        self,
        input_ids: torch.Tensor,
        past_key_values: OrtCache | None = None,
        use_cache: bool = True,
        logits_to_keep: int = 0,
        **_: Any,
    ) -> OrtOutput:
        """One forward pass; ``logits_to_keep``: as in transformers, the logits of the last that many positions
        alone (0: of every position)."""
        if input_ids.dim() != 2 or input_ids.shape[0] != 1:
            raise DataError(f"OrtDecoder: input_ids must be [1, tokens], got {tuple(input_ids.shape)}")
        new = input_ids.shape[1]
        if not 0 <= logits_to_keep <= new:
            raise DataError(f"OrtDecoder: logits_to_keep={logits_to_keep} for {new} new tokens")
        past = past_key_values.arrays if past_key_values is not None and past_key_values.arrays else None
        if past is None:
            empty = np.zeros((1, self.kv_heads, 0, self.head_dim), np.float32)
            past = [empty] * (2 * self.layers)
        feed = {
            "input_ids": input_ids.numpy().astype(np.int64),
            "logit_positions": np.arange(new - (logits_to_keep or new), new, dtype=np.int64),
        } | dict(zip(self.inputs[2:], past, strict=True))
        logits, *present = self.session.run(None, feed)
        return OrtOutput(torch.from_numpy(logits), OrtCache(present if use_cache else []))

    def file_bytes(self) -> int:
        return self.path.stat().st_size

    def weight_bytes(self) -> int:
        """Bytes of the graph's weights (initializers), as stored (int4 codes at half a byte)."""
        import onnx

        graph = onnx.load(str(self.path)).graph
        return sum(onnx.numpy_helper.to_array(t).nbytes for t in graph.initializer)
