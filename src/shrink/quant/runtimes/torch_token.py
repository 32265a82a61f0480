"""Per-token int8 Linear on PyTorch's oneDNN int8 kernels (VNNI / AMX on x86), and the compiled int8 model.

:class:`TokenInt8Linear` runs a shrink :class:`QuantLinear` whose input is quantized per token
(``act_mode="dynamic_token"``) for real: each row of the input gets 256 steps from its own minimum to its maximum
(uint8 codes), the product with the prepacked int8 weight codes runs in ``torch.ops.onednn.qlinear_pointwise``
(integer accumulation, per-output-channel weight scales in its epilogue), and the row grid comes back exactly::

    x ≈ s q + lo            (s, lo: one scale and offset per row; q: uint8)
    y = s (W q) + lo colsum(W) + b

The arithmetic is that of the simulated layer (:func:`shrink.quant.numerics.qparams.dynamic_fake_quant`) and of the ONNX
graph (:class:`shrink.quant.onnx.ops.TokenQLinear`), so all three agree to float rounding. On an x86 CPU without VNNI
the kernel gets 7-bit weight codes instead (:func:`kernel_codes`: its u8 x s8 products would saturate), and agrees
with the simulated layer on those codes (:func:`shrink.quant.runtimes.torch_backend.on_kernel_codes`).

:func:`compile_int8` hands the converted model to ``torch.compile`` with Inductor's freezing and autotuning: the
row reductions and rounding fuse into one kernel per input, the per-row epilogue fuses with what follows (bias,
GELU, residual add), and the int8 GEMMs stay on oneDNN / Inductor's AMX int8 micro-kernels.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shrink.errors import DataError, UnsupportedOpError
from shrink.quant.layers.convert import torch_int8_saturates
from shrink.quant.layers.modules import QuantLinear

__all__ = [
    "TokenInt8Linear",
    "SharedInputGEMM",
    "SharedInputMember",
    "merge_shared_inputs",
    "CompiledInt8",
    "compile_int8",
    "onednn_int8_available",
    "kernel_codes",
    "INDUCTOR_SETTINGS",
]

#: the largest weight code PyTorch's int8 kernels get where they saturate: 255 x 64 x 2 = 32,640 fits in 16 bits
SATURATION_SAFE_CODE = 64


def kernel_codes(codes: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight codes ``(out, ...)`` and their per-output-channel scales ``(out,)`` (a layer's ``weight_int`` and
    ``weight_scale``) as PyTorch's int8 kernels take them on this CPU, in int8 and float32: unchanged where it has
    int8 dot products (VNNI / AMX). Where a pair of uint8 x int8
    products is summed in 16 bits (:func:`~shrink.quant.layers.convert.torch_int8_saturates`), each channel whose
    codes reach past ±64 is put on a 7-bit grid, its largest code landing on ±64 (``c * 64 / max|c|`` rounded, the
    scale multiplied by ``max|c| / 64``), so that no pair can saturate, at the price of one bit of weight
    precision; the saturated sums would otherwise be silently wrong (255 x 127 x 2 = 64,770 > 32,767)."""
    codes, scale = codes.to(torch.int8), scale.detach().float()
    if not torch_int8_saturates():
        return codes, scale
    shape = [-1] + [1] * (codes.dim() - 1)
    factor = (codes.float().abs().reshape(len(codes), -1).amax(dim=1) / SATURATION_SAFE_CODE).clamp(min=1.0)
    narrowed = torch.round(codes.float() / factor.reshape(shape)).to(torch.int8)
    return narrowed, scale * factor


def onednn_int8_available() -> bool:
    """Whether this PyTorch build has oneDNN's int8 linear (x86 CPUs; the op is missing elsewhere)."""
    return hasattr(torch.ops.onednn, "qlinear_pointwise") and torch.backends.mkldnn.is_available()


class TokenInt8Linear(nn.Module):
    """Real int8 execution of a per-token :class:`QuantLinear`: uint8 rows x int8 weights on oneDNN."""

    packed_weight: torch.Tensor
    weight_scale: torch.Tensor
    weight_zero_point: torch.Tensor
    colsum: torch.Tensor
    bias: torch.Tensor | None
    input_smooth: torch.Tensor | None
    source: QuantLinear

    def __init__(self, layer: QuantLinear, name: str = "layer") -> None:
        super().__init__()
        if layer.act_mode != "dynamic_token":
            raise UnsupportedOpError(f"{name}: TokenInt8Linear needs per-token activations, got {layer.act_mode!r}")
        if not onednn_int8_available():
            raise UnsupportedOpError(f"{name}: this PyTorch build has no oneDNN int8 linear (x86 CPUs only)")
        codes, scale = kernel_codes(layer.weight_int, layer.weight_scale)
        object.__setattr__(self, "source", layer)  # the simulated layer (not a submodule), for merge_shared_inputs
        self.in_features, self.out_features, self.relu = layer.in_features, layer.out_features, layer.relu
        self.name = name
        self.register_buffer("packed_weight", torch.ops.onednn.qlinear_prepack(codes, None))
        self.register_buffer("weight_scale", scale.clone())  # (out,), symmetric: zero point 0
        self.register_buffer("weight_zero_point", torch.zeros(self.out_features, dtype=torch.long))
        self.register_buffer("colsum", codes.float().sum(dim=1) * self.weight_scale)
        self.register_buffer("bias", layer.bias.detach().float().clone() if layer.bias is not None else None)
        smooth = getattr(layer, "input_smooth", None)
        self.register_buffer("input_smooth", smooth.detach().clone() if smooth is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise DataError(f"{self.name}: input of shape {tuple(x.shape)}, expected (..., {self.in_features})")
        dtype = x.dtype  # a bf16 model's rows are quantized and the epilogue computed in float32, returned in bf16
        x = x.float()
        if self.input_smooth is not None:
            x = x * self.input_smooth
        # rows keep the input's shape (no reshape to 2-D): Inductor then runs the previous layer's epilogue, the
        # GELU, the row min/max and the rounding over one (tokens, features) loop nest instead of splitting them
        # at a view into separate passes over memory (same outputs; int8 FFNs of MiniLM's shape ~15% faster at
        # batch 32, the whole encoder ~3%)
        vector = x.dim() == 1  # oneDNN's int8 linear takes 2-D and more
        if vector:
            x = x.unsqueeze(0)
        lo, hi = torch.aminmax(x, dim=-1, keepdim=True)
        scale = ((hi - lo) * (1.0 / 255.0)).clamp(min=1e-12)
        q = torch.round((x - lo) * scale.reciprocal()).clamp(0, 255).to(torch.uint8)
        y = self._int_gemm(q) * scale + lo * self.colsum
        if self.bias is not None:
            y = y + self.bias
        if self.relu:
            y = F.relu(y)
        return (y.squeeze(0) if vector else y).to(dtype)

    def _int_gemm(self, q: torch.Tensor) -> torch.Tensor:
        """``q @ codesᵀ`` with the per-channel weight scales applied: uint8 rows times the prepacked int8 codes."""
        return torch.ops.onednn.qlinear_pointwise(
            q,
            1.0,
            0,
            self.packed_weight,
            self.weight_scale,
            self.weight_zero_point,
            None,
            1.0,
            0,
            torch.float32,
            "none",
            [],
            "",
        )

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, per-token uint8 x int8 (oneDNN)"


def _merged_layer(layers: list[QuantLinear]) -> QuantLinear:
    """One per-token QuantLinear with the members' weights stacked along the output dim."""
    first = layers[0]
    smooth = getattr(first, "input_smooth", None)
    merged = QuantLinear(
        first.in_features, sum(m.out_features for m in layers), True, 8, "dynamic_token", smooth=smooth is not None
    )
    merged.weight_int.copy_(torch.cat([m.weight_int for m in layers]))
    merged.weight_scale.copy_(torch.cat([m.weight_scale for m in layers]))
    assert merged.bias is not None  # built with bias=True
    merged.bias.data.copy_(
        torch.cat([m.bias.detach() if m.bias is not None else torch.zeros(m.out_features) for m in layers])
    )
    if smooth is not None:
        merged.register_buffer("input_smooth", smooth.detach().clone())
    return merged


class SharedInputGEMM(nn.Module):
    """Several per-token Linears that read the same input (query / key / value) as one GEMM over their stacked
    weights: the input is quantized once and multiplied once; :class:`SharedInputMember` hands out the slices."""

    def __init__(self, layers: list[QuantLinear], name: str = "merged") -> None:
        super().__init__()
        self.fused = TokenInt8Linear(_merged_layer(layers), name)
        self.sizes = [m.out_features for m in layers]
        self._input: torch.Tensor | None = None
        self._outputs: tuple[torch.Tensor, ...] = ()

    def output(self, x: torch.Tensor, index: int, last: bool) -> torch.Tensor:
        if self._input is not x:  # the first member's call computes all slices; the others reuse them
            self._input, self._outputs = x, torch.split(self.fused(x), self.sizes, dim=-1)
        out = self._outputs[index]
        if last:  # forget the tensors: nothing is held between forwards
            self._input, self._outputs = None, ()
        return out


class SharedInputMember(nn.Module):
    """Stands where one of the merged Linears was; the first member owns the :class:`SharedInputGEMM`."""

    shared: SharedInputGEMM

    def __init__(self, shared: SharedInputGEMM, index: int, last: bool) -> None:
        super().__init__()
        if index == 0:
            self.shared = shared
        else:
            object.__setattr__(self, "shared", shared)  # registered once, under the first member
        self.index, self.last = index, last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared.output(x, self.index, self.last)


def merge_shared_inputs(model: nn.Module, example_inputs: Any) -> int:
    """Merge the model's :class:`TokenInt8Linear` layers that read the same input tensor on ``example_inputs``
    (and share their smoothing factors) into one GEMM each, in place. Returns the number of merged groups. The
    merged members reuse one result only for the very same input object within a forward, in their call order."""
    from shrink.data import shared_input_groups
    from shrink.quant.layers.convert import set_module

    token = {n: m for n, m in model.named_modules() if isinstance(m, TokenInt8Linear)}
    merged = 0
    for group in shared_input_groups(model, token, [example_inputs]):
        layers = [token[n].source for n in group]
        smooth = [getattr(m, "input_smooth", None) for m in layers]
        same_smooth = all(
            (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
            for a, b in zip(smooth, smooth[1:], strict=False)
        )
        if not same_smooth or any(m.relu for m in layers):
            continue
        shared = SharedInputGEMM(layers, " + ".join(group))
        for i, name in enumerate(group):
            set_module(model, name, SharedInputMember(shared, i, i == len(group) - 1))
        merged += 1
    return merged


#: Inductor settings for the int8 graph: freezing (weights become constants, as oneDNN's prepacked int8 weights
#: must), autotuned GEMMs (Inductor's AMX / VNNI int8 micro-kernels where they beat oneDNN), and materializing any
#: pointwise chain of more than 4 ops instead of recomputing it in every kernel that reads it (the default, 30,
#: recomputes e.g. the FFN epilogue + erf-GELU in both the row min/max pass and the rounding pass of the next
#: layer's quantization: MiniLM batch 32 ran ~18.5 ms with it, ~13-14.5 ms with 4, on 2 cores)
INDUCTOR_SETTINGS = {"freezing": True, "max_autotune": True, "realize_opcount_threshold": 4}


def inductor_settings(model: nn.Module, max_autotune: bool = True) -> dict[str, Any]:
    """:data:`INDUCTOR_SETTINGS` for ``model`` (GEMM autotuning as ``max_autotune`` says). A model with int4
    weight-only Linears (:func:`~shrink.quant.to_torch_weight_only`) compiles without epilogue fusion into GEMM
    templates: PyTorch 2.13's AMX int4 template (many times faster than the ATen int4 kernel on a batch of
    tokens) fails to compile an epilogue that views its output in 3-D ('wrong ndim'), as a transformer's next op
    does."""
    from shrink.quant.runtimes.torch_weight_only import Int4WeightLinear

    settings: dict[str, Any] = {**INDUCTOR_SETTINGS, "max_autotune": max_autotune}
    if any(isinstance(m, Int4WeightLinear) for m in model.modules()):
        settings["epilogue_fusion"] = False
    return settings


#: Dynamo's recompile limits while a :class:`CompiledInt8` may compile. Dynamo caches graphs per Python function,
#: not per model: every model of one class compiled in a process adds entries to the same ``forward``'s cache, and
#: past ``recompile_limit`` (8 by default) the next model of that class silently runs eager (a sweep over 9 MiniLM
#: variants in one process did). Each compiled model needs its own graphs, so the limits are lifted around its calls
#: (not around calls with guards skipped: those never compile).
DYNAMO_LIMITS = {"recompile_limit": 1024, "accumulated_recompile_limit": 65536}


class _ConfigSwitch:
    """``values`` of a torch config module (Inductor's, Dynamo's) switched on around a block and restored after.
    Plain attribute writes: ``config.patch`` costs ~17 us a call, these ~3 us per setting."""

    def __init__(self, config: Any, values: dict[str, Any]) -> None:
        self.config, self.values = config, values

    def __enter__(self) -> None:
        self.saved = {k: getattr(self.config, k) for k in self.values}
        for k, v in self.values.items():
            setattr(self.config, k, v)

    def __exit__(self, *exc: object) -> None:
        for k, v in self.saved.items():
            setattr(self.config, k, v)


def _inference(value: Any) -> Any:
    """``value``, as an inference tensor if it is a tensor made outside ``torch.inference_mode`` (a copy)."""
    if isinstance(value, torch.Tensor) and not value.is_inference():
        return value.clone()
    return value


class CompiledInt8(nn.Module):
    """A model compiled by :func:`compile_int8`. Calls run in ``torch.inference_mode`` (frozen weights need
    inference), whatever the caller's mode, and tensor arguments made outside it are passed as inference tensors
    (copies): Dynamo guards on that difference, and each graph it compiles holds its own copy of the frozen
    weights, so the graphs compiled in the warm-up are the ones every call finds."""

    _compiled: Any

    def __init__(
        self, model: nn.Module, compiled: Any, skip_guards: bool = False, settings: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.model, self.skip_guards = model, skip_guards
        from torch._dynamo import config as dynamo
        from torch._inductor import config as inductor

        # Inductor reads its settings while tracing, on the first call and on any recompilation, and
        # ``torch.compile(options=...)`` does not reach the freezing pass: switched on around every call
        self._inductor = _ConfigSwitch(inductor, dict(INDUCTOR_SETTINGS if settings is None else settings))
        self._limits = _ConfigSwitch(dynamo, DYNAMO_LIMITS)
        object.__setattr__(self, "_compiled", compiled)  # not a submodule: it wraps ``model``, already registered
        #: seconds spent compiling in the warm-up calls (0 when no warm-up inputs were given)
        self.compile_seconds = 0.0
        self.shrink_execution = f"{getattr(model, 'shrink_execution', 'int8')}, compiled (torch.compile, Inductor)"

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode(), self._inductor:
            args = tuple(_inference(a) for a in args)
            kwargs = {k: _inference(v) for k, v in kwargs.items()}
            if self.skip_guards:
                try:
                    with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
                        return self._compiled(*args, **kwargs)
                except RuntimeError as exc:  # PyTorch refuses to compile anew with guards skipped: compile, go on
                    if "skip_guard_eval_unsafe" not in str(exc):
                        raise
                    warnings.warn(
                        "CompiledInt8: an input needed a new compilation (a kind the warm-up did not cover, or "
                        "torch._dynamo was reset); guards are evaluated again from now on",
                        stacklevel=2,
                    )
                    self.skip_guards = False
            with self._limits:
                return self._compiled(*args, **kwargs)


def compile_int8(
    model: nn.Module, warmup: list[Any] | None = None, skip_guards: bool = False, max_autotune: bool = True
) -> CompiledInt8:
    """Compile a model from :func:`shrink.quant.to_torch_int8` with ``torch.compile`` (Inductor with
    :data:`INDUCTOR_SETTINGS`, dynamic shapes). ``warmup``: example batches (dicts are keyword arguments) run once
    each, so the compilation happens here and is timed (``compile_seconds``) rather than in the first real call.
    Batches of size 1 compile a graph of their own (PyTorch specialises dimensions of size 1).

    ``max_autotune=False`` keeps Inductor's default GEMM choices instead of timing the candidates: minutes less to
    compile a large model (e.g. a decoder LLM's dozens of layers), at some speed.

    ``skip_guards``: after the warm-up, each call evaluates only the guards that tell the compiled graphs apart
    (``torch.compiler.set_stance(skip_guard_eval_unsafe=True)``), about 0.1 ms less per call. PyTorch calls this
    unsafe unless every later input is of a kind the warm-up compiled for (same dtypes, ranks and size-1 dims);
    when an input needs a new compilation anyway, PyTorch refuses it in that stance, and the model then compiles
    it with full guards (with a warning) and keeps evaluating them."""
    from shrink.data import call_model

    compiled = torch.compile(model, dynamic=True)
    out = CompiledInt8(model, compiled, settings=inductor_settings(model, max_autotune))
    start = time.perf_counter()
    for batch in warmup or []:
        call_model(out, batch)
    out.compile_seconds = time.perf_counter() - start if warmup else 0.0
    out.skip_guards = skip_guards
    return out
