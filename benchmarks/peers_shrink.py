"""shrink's rows for the peers table, measured exactly like the peers (same copy, calibration, threads).

shrink's static and dynamic int8 run for real in ONNX Runtime (QDQ / integer MatMul graphs), so those rows are the
exported ONNX file — the file a user deploys — and their size is that file's size. The compiled int8 row runs the
same kind of model on PyTorch's int8 kernels (``to_torch_int8`` + ``compile_int8``; its time includes the
compilation); its size is ``shrink.save``'s file, as for the weight-only rows, which run in PyTorch eager on packed
weights. When a shrink method is missing or fails here, its row carries the exact error like any peer.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from benchmarks.common import THREADS, run_measured
from benchmarks.peers import PeerOutcome, as_args

__all__ = ["ShrinkMethod", "shrink_methods"]


@dataclass(frozen=True)
class ShrinkMethod:
    scheme: str
    config: Callable[[], Any]  # builds the config (imported lazily: a missing method is a row with its error)
    onnx: bool  # True: runs in ONNX Runtime from its exported file; False: PyTorch eager, size = shrink.save file
    compiled: bool = False  # PyTorch int8 kernels, compiled (to_torch_int8 + compile_int8); size = shrink.save file


def _static(weight_bits: int = 8) -> Callable[[], Any]:
    def make() -> Any:
        from shrink.quant import Int8Static

        return Int8Static(weight_bits=weight_bits)

    return make


def _minilm_recipe(name: str) -> Callable[[], Any]:
    def make() -> Any:  # the MiniLM int8 configs of the quantization section, so both sections measure the same
        from benchmarks import quant_minilm

        return getattr(quant_minilm, name)

    return make


def _weight_only(bits: int) -> Callable[[], Any]:
    def make() -> Any:
        from shrink.quant import WeightOnly

        return WeightOnly(bits=bits, group_size=32)

    return make


def shrink_methods(kind: str, quick: bool) -> dict[str, ShrinkMethod]:
    """shrink's methods for ``kind`` ("minilm" or "digits") that match the peers' schemes."""
    if kind == "minilm":
        methods = {
            "shrink int8 (per-token act., GPTQ, smoothed; PyTorch int8, compiled)": ShrinkMethod(
                "W8A8", _minilm_recipe("SHRINK_INT8"), False, compiled=True
            ),
            "shrink int8 (per-token act., GPTQ, smoothed; ORT)": ShrinkMethod(
                "W8A8", _minilm_recipe("SHRINK_INT8"), True
            ),
        }
        if not quick:
            methods["shrink int8_static (ORT)"] = ShrinkMethod("W8A8", _minilm_recipe("SHRINK_STATIC"), True)
            methods["shrink weight_only int8 g32"] = ShrinkMethod("W8A16", _weight_only(8), False)
            methods["shrink weight_only int4 g32"] = ShrinkMethod("W4A16", _weight_only(4), False)
        return methods
    return {
        "shrink int8_static (ORT)": ShrinkMethod("W8A8", _static(), True),
        "shrink int8_static W4A8 (ORT)": ShrinkMethod("W4A8", _static(4), True),
    }


def run_shrink(method: ShrinkMethod, model: nn.Module, calibration: list[Any], example_inputs: Any) -> PeerOutcome:
    """Quantize a copy of ``model`` with ``method`` and open what runs; errors come back in ``error``."""
    import shrink
    from shrink.export.artifact import artifact_bytes
    from shrink.export.onnx import OnnxModel

    execution = "int8 graph in ONNX Runtime (integer kernels)" if method.onnx else "packed weights, eager torch"
    directory = Path(tempfile.mkdtemp(prefix="bench-shrink-"))

    def compress() -> Any:
        q = shrink.quantize(copy.deepcopy(model).eval(), method.config(), calibration=calibration)
        if method.compiled:
            from shrink.quant import compile_int8, to_torch_int8

            real = to_torch_int8(q, example_inputs=example_inputs)
            # warm up the way the peers harness calls (positional arguments), at batch N and batch 1 (a graph of
            # its own), so no later call compiles: guards are skipped after it
            batch = as_args(model, example_inputs)
            warm = [batch, tuple(t[:1] for t in batch)]
            return compile_int8(real, warmup=warm, skip_guards=True), artifact_bytes(q)  # size: the shrink file
        if not method.onnx:
            return q
        path = shrink.export.onnx(q, directory / "model.onnx", example_inputs=example_inputs)
        return OnnxModel(path, threads=THREADS, execution=execution)

    try:
        result, seconds, peak = run_measured(compress)
        if method.onnx:
            return PeerOutcome(lambda *args: result(args), result.size_bytes, seconds, peak, execution)
        runner, size = result if method.compiled else (result, artifact_bytes(result))
        label = getattr(runner, "shrink_execution", execution)
        return PeerOutcome(lambda *args: runner(*args), size, seconds, peak, label)
    except Exception as exc:  # shrink failing here is a result of this run, shown like a peer's failure
        return PeerOutcome(
            None,
            None,
            float("nan"),
            float("nan"),
            execution,
            f"{type(exc).__name__}: {' '.join(str(exc).split())[:600]}",
        )
