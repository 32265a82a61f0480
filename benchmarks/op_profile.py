"""Where a model's time goes: ``torch.profiler`` over a few calls, CPU self time grouped by kind of operator.

Used by the MiniLM section to put a per-op breakdown of the fp32 and int8 models in docs/benchmarks.md, so a reader
can see what still runs in float (attention matmuls, softmax, LayerNorm) and what runs on integer kernels.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from benchmarks.common import Table

__all__ = [
    "op_kind",
    "profile_ops",
    "breakdown_table",
    "inductor_kernel_scopes",
    "compiled_for_profile",
    "kernel_times",
]

#: (substring of the profiler's event name, kind); the first match wins, in this order
_KINDS = (
    ("scaled_dot_product", "attention (fused SDPA kernel)"),
    ("qlinear", "int8 GEMM (oneDNN qlinear)"),
    ("_int_mm", "int8 GEMM (_int_mm)"),
    ("cpp_cpp_micro_gemm", "GEMM (Inductor micro-kernel)"),
    ("micro_gemm", "GEMM (Inductor micro-kernel)"),
    ("linear", "float GEMM (linear / mkldnn)"),
    ("addmm", "float GEMM (linear / mkldnn)"),
    ("mm", "float matmul (bmm / mm: attention, unfused)"),
    ("softmax", "softmax"),
    ("layer_norm", "LayerNorm"),
    ("gelu", "GELU"),
    ("cpp_fused", "fused pointwise / reductions (Inductor kernels)"),
    ("embedding", "embedding"),
)


#: what an Inductor kernel computes, read off its name (it lists the ops fused into it), in this order
_FUSED = (
    ("gelu", "GELU"),
    ("layer_norm", "LayerNorm"),
    ("softmax", "softmax"),
    ("aminmax", "per-token quantization"),
)


@contextmanager
def inductor_kernel_scopes() -> Iterator[None]:
    """Graphs Inductor compiles inside this block report each of their C++ kernels to ``torch.profiler`` by name,
    so that :func:`profile_ops` can tell a compiled model's GEMMs, GELU, quantization and LayerNorm apart instead
    of one opaque compiled region. Only for models built to be profiled: every kernel then opens a profiler scope on
    every call, profiler or not, which costs time (MiniLM at batch 32, 2 threads: about 3 ms of 11-12 in
    torch.compile, more in an AOTInductor package), so timed models are compiled outside it."""
    from torch._inductor import config

    with config.patch({"cpp.enable_kernel_profile": True}):
        yield


def compiled_for_profile(model: nn.Module, example: Any) -> Callable[[Any], Any]:
    """``model`` compiled for the shapes of ``example`` (Inductor with shrink's settings: frozen weights, GEMM
    autotuning) with :func:`inductor_kernel_scopes`, compiled here by one call; returns a function of the input.
    Static shapes: with dynamic ones and the scopes on, PyTorch 2.13 writes a symbolic size into a GEMM template's
    scope name, the template fails to compile, and oneDNN's GEMM would be profiled in place of the template kernels
    that timed models run."""
    from shrink.data import call_model
    from shrink.quant import CompiledInt8

    compiled = CompiledInt8(model, torch.compile(model, dynamic=False))
    with inductor_kernel_scopes():
        call_model(compiled, example)
    return lambda x: call_model(compiled, x)


def kernel_times(profile: dict[str, float]) -> dict[str, float]:
    """A :func:`profile_ops` result reduced to kernels: 'quantization' (kernels that quantize rows, with whatever
    they fused), 'GEMM' (template kernels, oneDNN / ATen GEMMs and matmuls) and 'other kernels'; framework time
    between kernels ('other') is left out."""
    out = {"quantization": 0.0, "GEMM": 0.0, "other kernels": 0.0}
    for kind, ms in profile.items():
        if "quantization" in kind:
            out["quantization"] += ms
        elif "GEMM" in kind or "matmul" in kind:
            out["GEMM"] += ms
        elif kind != "other":
            out["other kernels"] += ms
    return out


def _inductor_kind(low: str) -> str:
    """An Inductor kernel (``graph_<n>_cpp_...``) by the ops its name lists: GEMM templates apart, fused kernels by
    the GELU / LayerNorm / softmax / row quantization they contain (an int8 GEMM's epilogue shows up as
    ``qlinear_pointwise`` in the name of the kernel it fused into, so that word does not count)."""
    if "gemm" in low:  # graph_<n>_gemm_m<M>n<N>k<K>_kernel: a Linear's (its epilogue fused) or an attention matmul
        return "GEMM (Inductor template kernel, epilogue fused)"
    parts = [kind for key, kind in _FUSED if key in low]
    return f"Inductor kernel: {' + '.join(parts)}" if parts else "Inductor kernel: other pointwise / reductions"


def op_kind(name: str) -> str:
    """The kind of a profiler event, by name (``"other"`` when nothing matches)."""
    low = name.lower()
    if low.startswith("graph_") and ("cpp_" in low or "_gemm_" in low):  # events of inductor_kernel_scopes()
        return _inductor_kind(low)
    return next((kind for key, kind in _KINDS if key in low), "other")


def profile_ops(fn: Callable[[], Any], calls: int = 10) -> dict[str, float]:
    """Milliseconds of CPU self time per call of ``fn``, by :func:`op_kind`, over ``calls`` calls after one warm-up
    call (framework overhead outside the operators is the 'other' kind)."""
    with torch.inference_mode():
        fn()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                fn()
    out: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("ProfilerStep"):
            continue
        out[op_kind(event.key)] += event.self_cpu_time_total / 1e3 / calls
    return dict(out)


def breakdown_table(title: str, profiles: dict[str, dict[str, float]]) -> Table:
    """One column per profiled model (ms per call and share), one row per kind of operator."""
    names = list(profiles)
    kinds = sorted(
        {k for p in profiles.values() for k in p}, key=lambda k: -max(p.get(k, 0) for p in profiles.values())
    )
    table = Table(title, ["operator kind", *names])
    totals = {n: sum(profiles[n].values()) or 1.0 for n in names}
    for kind in kinds:
        table.add(
            kind,
            *(f"{profiles[n].get(kind, 0.0):.2f} ms ({profiles[n].get(kind, 0.0) / totals[n]:.0%})" for n in names),
        )
    table.add("total (profiled, with profiler overhead)", *(f"{totals[n]:.2f} ms" for n in names))
    return table
