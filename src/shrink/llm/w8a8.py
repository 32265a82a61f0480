"""W8A8 for decoder LLMs: shrink's MiniLM int8 path carried over to the Llama Linears.

Per-channel int8 weights rounded with GPTQ, per-token int8 activations computed at run time, SmoothQuant with the
migration strength searched per input on calibration rows; q/k/v (one input) and gate/up (one input) run as one
int8 GEMM each on PyTorch's oneDNN int8 kernels (:func:`shrink.quant.to_torch_int8`). ``lm_head`` stays float
(its 49k-wide output is the most error-sensitive layer), as do RMSNorm, RoPE, softmax and the attention matmuls:
in float32, or with ``dtype=torch.bfloat16`` in bf16 (for CPUs with native bf16: AMX / AVX-512 BF16), the int8
layers then quantizing their bf16 input rows and returning bf16.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from shrink.config import Config
from shrink.errors import ConfigError, DataError, UnsupportedOpError
from shrink.presets import DECODER_LINEARS
from shrink.presets import get as get_preset
from shrink.quant import compile_int8, to_torch_int8

__all__ = ["W8A8", "quantize_w8a8"]

#: the Linears W8A8 quantizes: all but ``lm_head``
LINEARS = DECODER_LINEARS
#: the shrink W8A8 recipe for Llama-style decoders, one stage per algorithm, applied in order (preset decoder-w8a8)
W8A8: list[Config] = get_preset("decoder-w8a8")


def quantize_w8a8(
    model: nn.Module,
    calibration: Iterable[torch.Tensor],
    config: Sequence[Config] = tuple(W8A8),
    compile: bool = False,
    warmup: list[torch.Tensor] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Any:
    """A W8A8 copy of ``model`` on PyTorch's int8 kernels, calibrated on token windows (1-D or [1, n] ids).

    ``dtype``: what runs outside the int8 GEMMs (embeddings, norms, attention, ``lm_head``), float32 or bfloat16;
    calibration always runs in float32. ``compile=True`` hands it to Inductor (:func:`shrink.quant.compile_int8`),
    warmed up on ``warmup`` windows. The input model is not changed."""
    import shrink

    if dtype not in (torch.float32, torch.bfloat16):
        raise ConfigError(f"quantize_w8a8: dtype must be torch.float32 or torch.bfloat16, got {dtype}")
    batches: list[dict[str, Any]] = [{"input_ids": ids.reshape(1, -1), "use_cache": False} for ids in calibration]
    if not batches:
        raise DataError("quantize_w8a8: calibration has no token window")
    simulated = shrink.quantize(model, list(config), calibration=batches)
    real = to_torch_int8(simulated, example_inputs={"input_ids": batches[0]["input_ids"], "use_cache": False})
    _float_parts_to(real, dtype)
    if not compile:
        return real
    shapes = warmup if warmup is not None else [batches[0]["input_ids"]]
    return compile_int8(real, warmup=[{"input_ids": ids.reshape(1, -1), "use_cache": False} for ids in shapes])


def _float_parts_to(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast, in place, every float parameter and buffer outside the int8 layers to ``dtype``; the int8 layers keep
    their float32 scales and return their input's dtype (:class:`shrink.quant.TokenInt8Linear`)."""
    from shrink.quant.runtimes.torch_token import SharedInputGEMM, TokenInt8Linear

    if dtype == torch.float32:
        return
    for name, m in model.named_modules():
        if isinstance(m, (TokenInt8Linear, SharedInputGEMM)):
            continue
        if type(m).__module__.startswith("torch.ao.nn.quantized"):
            raise UnsupportedOpError(f"quantize_w8a8: {name} runs a per-tensor int8 kernel that takes float32 alone")
        for p in m.parameters(recurse=False):
            if p.is_floating_point():
                p.data = p.data.to(dtype)  # tied weights (lm_head / embeddings) are cast once, and stay tied
        for key, b in list(m.named_buffers(recurse=False)):
            if b.is_floating_point():
                m._buffers[key] = b.to(dtype)
