"""``evaluate``: task metric, params, non-zeros, real bytes on disk, MACs and latency for each model."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from shrink.data import DataBundle, call_model
from shrink.errors import ConfigError
from shrink.eval.counts import count_macs, count_params
from shrink.eval.latency import interleaved_stats, repeat_batch
from shrink.eval.metrics import accuracy, embedding_fidelity, predict
from shrink.export.artifact import artifact_bytes, own_artifact_bytes
from shrink.export.onnx import OnnxModel
from shrink.report.table import Report, Row

__all__ = ["evaluate", "machine_info", "cpu_name", "cpu_features", "CPU_FEATURES"]

METRICS = ("accuracy", "fidelity")


def cpu_name() -> str:
    """The CPU model name (from /proc/cpuinfo where it exists)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: /proc/cpuinfo flags that decide which int8 / bf16 kernels run
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def cpu_features() -> dict[str, bool]:
    """Which of :data:`CPU_FEATURES` this CPU reports (all False where /proc/cpuinfo does not exist)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {name: name in flags for name in CPU_FEATURES}


def machine_info(threads: int) -> dict[str, Any]:
    import onnxruntime

    return {
        "cpu": cpu_name(),
        "cpu_features": cpu_features(),
        "cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()),
    }


def _runner(model: Any):
    if isinstance(model, OnnxModel):
        return model
    return lambda inputs: call_model(model, inputs)


def evaluate(
    models: Mapping[str, nn.Module | OnnxModel],
    data: DataBundle | Iterable[Any],
    metric: str | None = None,
    *,
    example_inputs: Any = None,
    batch_sizes: Sequence[int] = (1,),
    threads: int = 2,
    reps: int = 20,
    warmup: int = 5,
    reference: str | None = None,
    notes: Mapping[str, list[str]] | None = None,
    progress: bool = True,
    title: str = "shrink report",
) -> Report:
    """Measure every model on the same data and return a :class:`Report`.

    Latencies of all models are timed together, in ``reps`` interleaved rounds per batch size
    (:func:`shrink.eval.latency.interleaved_stats`), so that they compare fairly on a machine whose load changes;
    each model is called ``warmup`` times first. A latency whose slowest round was over 1.5x its fastest is
    marked unstable.

    ``data`` is a :class:`DataBundle` (its test split, example input and metric are used) or an iterable of
    evaluation batches (then pass ``metric`` and ``example_inputs``). For ``metric="fidelity"`` the model named
    ``reference`` (default: the first) provides the reference embeddings.
    """
    if isinstance(data, DataBundle):
        eval_data, metric, example_inputs = data.test, metric or data.metric, example_inputs or data.example_inputs
    else:
        eval_data = data
    if metric not in METRICS:
        raise ConfigError(f"evaluate: metric must be one of {METRICS}, got {metric!r}")
    if example_inputs is None:
        raise ConfigError("evaluate: example_inputs is required to measure MACs and latency")
    if not models:
        raise ConfigError("evaluate: no models given")
    reference = reference or next(iter(models))
    if reference not in models:
        raise ConfigError(f"evaluate: reference {reference!r} is not among the models {list(models)}")

    ref_out = predict(_runner(models[reference]), eval_data)[0] if metric == "fidelity" else None
    runners = {name: _runner(model) for name, model in models.items()}
    rows = []
    for name, model in tqdm(models.items(), desc="evaluate", disable=not progress, leave=False):
        out, targets = predict(runners[name], eval_data)
        if metric == "accuracy":
            metrics = {"accuracy": accuracy(out, targets)}
        else:
            assert ref_out is not None
            metrics = embedding_fidelity(ref_out, out)
        rows.append(_row(name, model, metrics, example_inputs, list((notes or {}).get(name, []))))
    latency = _latency_together(list(runners.values()), example_inputs, batch_sizes, threads, reps, warmup)
    for row, per_batch in zip(rows, latency, strict=True):
        row.latency = per_batch
    return Report(rows=rows, metric=metric, machine=machine_info(threads), title=title)


def _latency_together(
    runners: list[Any], example_inputs: Any, batch_sizes: Sequence[int], threads: int, reps: int, warmup: int
) -> list[dict[str, dict[str, Any]]]:
    """Per runner: batch size -> latency statistics, every runner timed in the same interleaved rounds."""
    out: list[dict[str, dict[str, Any]]] = [{} for _ in runners]
    for b in batch_sizes:
        batch = repeat_batch(example_inputs, b)
        fns = [partial(run, batch) for run in runners]
        with torch.inference_mode():
            for fn in fns:
                for _ in range(warmup):
                    fn()
        stats = interleaved_stats(fns, threads=threads, rounds=max(1, reps), calls=3, warmup=1, batch_size=b)
        for per_model, st in zip(out, stats, strict=True):
            per_model[str(b)] = st.to_dict()
    return out


def _row(name: str, model: Any, metrics: dict[str, float], example_inputs: Any, notes: list[str]) -> Row:
    if isinstance(model, OnnxModel):
        params = nonzero = None
        size, macs, runtime, execution = model.size_bytes, model.macs, model.runtime, model.execution
    else:
        params, nonzero = count_params(model)
        size, macs = own_artifact_bytes(model) or artifact_bytes(model), count_macs(model, example_inputs)
        runtime = getattr(model, "shrink_runtime", "torch eager")
        execution = getattr(model, "shrink_execution", "fp32")
    return Row(
        name=name,
        runtime=runtime,
        execution=execution,
        metrics=metrics,
        params=params,
        nonzero_params=nonzero,
        size_bytes=size,
        macs=macs,
        notes=notes,
    )
