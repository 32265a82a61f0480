"""What a new process pays to have a compiled quantized model: compiling it again with Inductor's on-disk cache
(autotuning results and built kernels, under ``TORCHINDUCTOR_CACHE_DIR``, default ``/tmp/torchinductor_$USER``)
warm from an earlier compile of the same model, or loading the AOTInductor package built ahead of time: the cost a
user pays the second time a deployment process starts."""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["compile_seconds_in_new_process", "package_load_seconds_in_new_process"]


def _child(path: str, example: Any, warmup: list[Any], threads: int, out: Any) -> None:
    try:
        from shrink.quant import compile_int8, to_torch_int8

        torch.set_num_threads(threads)
        q = torch.load(path, weights_only=False)
        compiled = compile_int8(to_torch_int8(q, example_inputs=example), warmup=warmup, skip_guards=True)
        out.put(("ok", compiled.compile_seconds))
    except BaseException as exc:  # the parent reports it
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def _package_child(path: str, warmup: list[Any], threads: int, out: Any) -> None:
    try:
        from shrink.data import call_model
        from shrink.quant import load_int8_package

        torch.set_num_threads(threads)
        start = time.perf_counter()
        loaded = load_int8_package(path)
        for batch in warmup:
            call_model(loaded, batch)
        out.put(("ok", time.perf_counter() - start))
    except BaseException as exc:  # the parent reports it
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def _in_new_process(target: Any, args: tuple[Any, ...], timeout_s: float) -> float:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, out))
    proc.start()
    try:
        status, value = out.get(timeout=timeout_s)
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    if status != "ok":
        raise RuntimeError(f"in a new process: {value}")
    return float(value)


def package_load_seconds_in_new_process(
    path: Path, warmup: list[Any], threads: int = 2, timeout_s: float = 300
) -> float:
    """Seconds a new (spawned) Python process takes to load an AOTInductor package with
    :func:`shrink.quant.load_int8_package` and run the ``warmup`` batches once each. Raises RuntimeError with the
    child's error when it fails."""
    return _in_new_process(_package_child, (str(path), warmup, threads), timeout_s)


def compile_seconds_in_new_process(
    quantized: nn.Module, example: Any, warmup: list[Any], threads: int = 2, timeout_s: float = 900
) -> float:
    """Seconds ``compile_int8(to_torch_int8(quantized))`` takes in a new (spawned) Python process, warm-up batches
    included. Raises RuntimeError with the child's error when it fails."""
    with tempfile.TemporaryDirectory(prefix="compile-cache-") as d:
        path = Path(d) / "quantized.pt"
        torch.save(quantized, path)
        return _in_new_process(_child, (str(path), example, warmup, threads), timeout_s)
