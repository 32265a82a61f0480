"""Compile time of a quantized model in a fresh process, where Inductor's on-disk cache (FX graphs and autotuning
results, under ``TORCHINDUCTOR_CACHE_DIR``, default ``/tmp/torchinductor_$USER``) is warm from an earlier compile
of the same model: the cost a user pays the second time a deployment process starts."""

from __future__ import annotations

import multiprocessing as mp
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["compile_seconds_in_new_process"]


def _child(path: str, example: Any, warmup: list[Any], threads: int, out: Any) -> None:
    try:
        from shrink.quant import compile_int8, to_torch_int8

        torch.set_num_threads(threads)
        q = torch.load(path, weights_only=False)
        compiled = compile_int8(to_torch_int8(q, example_inputs=example), warmup=warmup, skip_guards=True)
        out.put(("ok", compiled.compile_seconds))
    except BaseException as exc:  # the parent reports it
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def compile_seconds_in_new_process(
    quantized: nn.Module, example: Any, warmup: list[Any], threads: int = 2, timeout_s: float = 900
) -> float:
    """Seconds ``compile_int8(to_torch_int8(quantized))`` takes in a new (spawned) Python process, warm-up batches
    included. Raises RuntimeError with the child's error when it fails."""
    with tempfile.TemporaryDirectory(prefix="compile-cache-") as d:
        path = Path(d) / "quantized.pt"
        torch.save(quantized, path)
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        proc = ctx.Process(target=_child, args=(str(path), example, warmup, threads, out))
        proc.start()
        try:
            status, value = out.get(timeout=timeout_s)
        finally:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    if status != "ok":
        raise RuntimeError(f"compile in a new process failed: {value}")
    return float(value)
