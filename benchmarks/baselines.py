"""The float baselines every speed claim is judged against, and timing of a whole table together.

A speed ratio in these benchmarks is against the **fastest** float execution of the same model measured in the same
run, timed in the same interleaved rounds as the row it is compared with: PyTorch eager fp32, fp32 through
``torch.compile`` with the settings shrink's compiled int8 rows use (Inductor, frozen weights, autotuned GEMMs), bf16
through the same compiler where the CPU has native bf16 instructions, and ONNX Runtime fp32 with every graph
optimization on; where a table also times shrink's int8 model compiled ahead of time (AOTInductor), the float
model gets the same: its fastest compiled precision (bf16 where native, else fp32) packaged ahead of time. A model
whose Hugging Face transformer runs its attention in eager PyTorch ops (MiniLM as the zoo loads it) also gets the
same rows with PyTorch's fused ``scaled_dot_product_attention`` (SDPA; transformers' default), eager, compiled and
packaged: each float row at whichever attention is faster on the CPU that runs it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

import shrink
from benchmarks.common import THREADS, Built
from shrink.data import call_model
from shrink.eval.harness import cpu_features
from shrink.eval.latency import LatencyStats, interleaved_stats
from shrink.export.artifact import artifact_bytes
from shrink.export.onnx import OnnxModel
from shrink.quant import compile_int8, load_int8_package, package_int8

__all__ = [
    "EAGER",
    "COMPILED",
    "BF16",
    "ORT",
    "AOT_FP32",
    "AOT_BF16",
    "EAGER_SDPA",
    "COMPILED_SDPA",
    "BF16_SDPA",
    "AOT_FP32_SDPA",
    "AOT_BF16_SDPA",
    "FLOAT_ROWS",
    "sdpa_copy",
    "as_precision",
    "Bfloat16",
    "native_bf16",
    "float_baselines",
    "compiled_row",
    "packaged_row",
    "time_together",
    "best_float",
    "speedup",
    "ms_cell",
]

EAGER = "fp32 (torch eager)"
COMPILED = "fp32 (torch.compile, Inductor, frozen)"
BF16 = "bf16 (torch.compile, Inductor, frozen; native bf16)"
ORT = "fp32 (onnxruntime, all graph optimizations)"
AOT_FP32 = "fp32 (AOTInductor package, frozen)"
AOT_BF16 = "bf16 (AOTInductor package, frozen; native bf16)"
#: the execution column of the compiled and packaged float rows, by precision (bf16: True)
_COMPILED_LABEL = {
    False: "fp32, torch.compile (Inductor, frozen, autotuned)",
    True: "bf16, torch.compile (native bf16)",
}
_AOT_LABEL = {
    b: f"{'bf16' if b else 'fp32'}, AOTInductor package (the settings of shrink's package)" for b in (False, True)
}

SDPA = "SDPA attention"
EAGER_SDPA = f"fp32 (torch eager, {SDPA})"
COMPILED_SDPA = f"fp32 (torch.compile, Inductor, frozen; {SDPA})"
BF16_SDPA = f"bf16 (torch.compile, Inductor, frozen; native bf16; {SDPA})"
AOT_FP32_SDPA = f"fp32 (AOTInductor package, frozen; {SDPA})"
AOT_BF16_SDPA = f"bf16 (AOTInductor package, frozen; native bf16; {SDPA})"
FLOAT_ROWS = (
    EAGER,
    COMPILED,
    BF16,
    ORT,
    AOT_FP32,
    AOT_BF16,
    EAGER_SDPA,
    COMPILED_SDPA,
    BF16_SDPA,
    AOT_FP32_SDPA,
    AOT_BF16_SDPA,
)


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16); elsewhere bf16 is emulated and no
    baseline."""
    f = cpu_features()
    return f["avx512_bf16"] or f["amx_bf16"]


class Bfloat16(nn.Module):
    """``model`` in bf16: floating inputs are cast to bf16 on the way in, floating outputs back to fp32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.to(torch.bfloat16)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        def cast(t: Any) -> Any:
            return t.to(torch.bfloat16) if isinstance(t, torch.Tensor) and t.is_floating_point() else t

        out = self.model(*map(cast, args), **{k: cast(v) for k, v in kwargs.items()})
        return out.float() if isinstance(out, torch.Tensor) else out


def _eager_attention(module: nn.Module) -> bool:
    """Whether ``module`` is a Hugging Face model set to eager attention that can switch its attention."""
    config = getattr(module, "config", None)
    return getattr(config, "_attn_implementation", None) == "eager" and hasattr(module, "set_attn_implementation")


def sdpa_copy(model: nn.Module) -> nn.Module | None:
    """A copy of ``model`` whose Hugging Face transformers that run attention in eager ops run it through PyTorch's
    ``scaled_dot_product_attention`` instead (same weights, same function); None when ``model`` has no such
    transformer or it cannot switch (then nothing is copied). ``model`` itself is not changed."""
    if not any(_eager_attention(m) for m in model.modules()):
        return None
    twin = copy.deepcopy(model)
    switched = False
    for module in twin.modules():
        if not _eager_attention(module):  # also a submodel its parent already switched
            continue
        try:
            module.set_attn_implementation("sdpa")  # type: ignore[operator]
        except (ValueError, ImportError):  # a model transformers has no SDPA path for keeps its eager attention
            continue
        switched = switched or module.config._attn_implementation == "sdpa"  # type: ignore[union-attr]
    return twin if switched else None


def as_precision(model: nn.Module, bf16: bool) -> nn.Module:
    """A copy of ``model`` in bf16 (:class:`Bfloat16`) or fp32, for a compiled float row."""
    return Bfloat16(copy.deepcopy(model)) if bf16 else copy.deepcopy(model)


def compiled_row(model: nn.Module, warmup: list[Any], label: str | None = None, size_bytes: int | None = None) -> Built:
    """``model`` through :func:`~shrink.quant.compile_int8` (compiled at the ``warmup`` batches); ``label``:
    the execution column (default: what the compiled model says it runs); ``size_bytes``: the file the row loads
    from (default: ``model``'s own, which a model holding prepacked runtime weights does not have)."""
    c = compile_int8(model, warmup=warmup, skip_guards=True)
    size = artifact_bytes(model) if size_bytes is None else size_bytes
    return Built(lambda x: call_model(c, x), size, 0.0, label or c.shrink_execution, c.compile_seconds)


def packaged_row(model: nn.Module, example_inputs: Any, path: Path, label: str | None = None) -> Built:
    """``model`` compiled ahead of time like shrink's int8 package (same Inductor settings), loaded from the file;
    the packaging time goes where compile time goes. ``label`` as in :func:`compiled_row`."""
    start = time.perf_counter()
    package_int8(model, path, example_inputs)
    seconds = time.perf_counter() - start
    loaded = load_int8_package(path)
    run = lambda x: call_model(loaded, x)  # noqa: E731
    return Built(run, path.stat().st_size, 0.0, label or loaded.shrink_execution, seconds)


def float_baselines(
    model: nn.Module,
    example_inputs: Any,
    warmup: list[Any],
    onnx_path: Path,
    bf16: bool | None = None,
    failures: dict[str, str] | None = None,
    aot: bool = False,
) -> dict[str, Built]:
    """The float rows for ``model``: eager, compiled, bf16 compiled (when ``bf16``, default: the CPU has native
    bf16) and ONNX Runtime; with ``aot``, also bf16 (else fp32) compiled ahead of time into an AOTInductor package
    from ``warmup[0]`` (for tables that time shrink's int8 package); for a transformer with eager attention, the
    eager row and the fastest compiled (and packaged) rows again with SDPA attention (:func:`sdpa_copy`).
    ``warmup``: the batches the table is timed at, compiled before timing. A baseline that cannot be built (a model
    ONNX cannot export, say) is left out and its error put in ``failures`` when given, else raised."""
    rows = {EAGER: Built(lambda x: call_model(model, x), artifact_bytes(model), 0.0, "torch eager fp32")}
    makers: dict[str, Callable[[], Built]] = {
        COMPILED: lambda: compiled_row(as_precision(model, False), warmup, _COMPILED_LABEL[False])
    }
    use_bf16 = native_bf16() if bf16 is None else bf16
    if use_bf16:
        makers[BF16] = lambda: compiled_row(as_precision(model, True), warmup, _COMPILED_LABEL[True])
    makers[ORT] = lambda: _ort(model, example_inputs, onnx_path)
    aot_path = onnx_path.with_name(f"{onnx_path.stem}-float-aot.pt2")
    if aot:
        makers[AOT_BF16 if use_bf16 else AOT_FP32] = lambda: packaged_row(
            as_precision(model, use_bf16), warmup[0], aot_path, _AOT_LABEL[use_bf16]
        )
    if (sdpa := sdpa_copy(model)) is not None:  # the fastest compiled precision again, with SDPA attention
        rows[EAGER_SDPA] = Built(lambda x: call_model(sdpa, x), artifact_bytes(sdpa), 0.0, f"torch eager fp32, {SDPA}")
        makers[BF16_SDPA if use_bf16 else COMPILED_SDPA] = lambda: compiled_row(
            as_precision(sdpa, use_bf16), warmup, f"{_COMPILED_LABEL[use_bf16]}, {SDPA}"
        )
        if aot:
            sdpa_path = aot_path.with_name(f"{onnx_path.stem}-float-aot-sdpa.pt2")
            makers[AOT_BF16_SDPA if use_bf16 else AOT_FP32_SDPA] = lambda: packaged_row(
                as_precision(sdpa, use_bf16), warmup[0], sdpa_path, f"{_AOT_LABEL[use_bf16]}, {SDPA}"
            )
    for name, make in makers.items():
        try:
            rows[name] = make()
        except Exception as exc:
            if failures is None:
                raise
            failures[name] = f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
    return rows


def _ort(model: nn.Module, example_inputs: Any, onnx_path: Path) -> Built:
    if not onnx_path.exists():
        shrink.export.onnx(model, onnx_path, example_inputs)
    session = OnnxModel(onnx_path, threads=THREADS)
    return Built(session, session.size_bytes, 0.0, "onnxruntime fp32, ORT_ENABLE_ALL")


def time_together(
    runs: Mapping[str, Callable[[Any], Any]], batches: Mapping[int, Any], rounds: int = 15
) -> dict[str, dict[int, LatencyStats]]:
    """Latency of every run at every batch size (batch size -> input), all runs timed in the same interleaved
    rounds (:func:`shrink.eval.latency.interleaved_stats`) so that their ratios hold whatever the machine's load."""
    names = list(runs)
    out: dict[str, dict[int, LatencyStats]] = {n: {} for n in names}
    for b, x in batches.items():
        fns = [lambda f=runs[n], x=x: f(x) for n in names]
        for name, st in zip(names, interleaved_stats(fns, threads=THREADS, rounds=rounds, batch_size=b), strict=True):
            out[name][b] = st
    return out


def best_float(latency: Mapping[str, Mapping[int, LatencyStats]], batch: int) -> tuple[str, float]:
    """The fastest float row at ``batch``: (row name, median ms). Raises if no float row was timed."""
    timed = [(latency[n][batch].median_ms, n) for n in FLOAT_ROWS if n in latency and batch in latency[n]]
    if not timed:
        raise ValueError(f"no float baseline was timed at batch {batch}")
    ms, name = min(timed)
    return name, ms


def speedup(latency: Mapping[str, Mapping[int, LatencyStats]], row: str, batch: int) -> float:
    """How many times faster ``row`` runs than the fastest float row at ``batch`` (nan when ``row`` was not
    timed)."""
    if row not in latency or batch not in latency[row]:
        return float("nan")
    return best_float(latency, batch)[1] / latency[row][batch].median_ms


def ms_cell(stats: LatencyStats) -> str:
    """A latency cell: the median, with its spread and a flag when the row was unstable (max/min over 1.5x)."""
    text = f"{stats.median_ms:.3g}"
    return text + (f" ⚠ unstable ({stats.min_ms:.3g}–{stats.max_ms:.3g})" if stats.unstable else "")
