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

from shrink.counts import count_macs, count_params
from shrink.data import METRICS, DataBundle, LanguageData, call_model, check_not_meta, named_tensors
from shrink.errors import ConfigError, DataError
from shrink.eval.language import language_metrics
from shrink.eval.latency import batch_axis_of, interleaved_stats, repeat_batch
from shrink.eval.metrics import (
    OutputChoice,
    accuracy,
    embedding_fidelity,
    evaluation_mode,
    predict,
    regression_errors,
)
from shrink.export.artifact import artifact_bytes, own_artifact_bytes
from shrink.export.kernels import kernel_summary
from shrink.export.onnx import OnnxModel
from shrink.report.table import Report, Row

__all__ = ["evaluate", "check_batch_sizes", "MAX_BATCH", "machine_info", "cpu_name", "cpu_features", "CPU_FEATURES"]


#: largest latency batch: the example input is repeated this many times in memory
MAX_BATCH = 65536


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
    output: OutputChoice = None,
    batch_axis: int = 0,
) -> Report:
    """Measure every model on the same data and return a :class:`Report`.

    Latencies of all models are timed together, ``reps`` calls each in interleaved rounds of 3 per batch size
    (:func:`shrink.eval.latency.interleaved_stats`), so that they compare fairly on a machine whose load changes;
    each model is called ``warmup`` times first. A latency whose slowest round was over 1.5x its fastest is
    marked unstable. A batch of ``b`` repeats the example input's first sample ``b`` times along ``batch_axis`` (1
    for a time-major model reading ``(time, batch, features)``).

    ``data`` is a :class:`DataBundle` (its test split, example input and metric are used) or an iterable of
    evaluation batches (then pass ``metric`` and ``example_inputs``). For ``metric="fidelity"`` the model named
    ``reference`` (default: the first) provides the reference embeddings. ``metric="perplexity"`` (causal language
    models) needs a :class:`shrink.data.LanguageData`: each row gets perplexity, greedy-token agreement and the
    matching prefix with ``reference`` and decoding tokens/s at batch 1
    (:func:`shrink.eval.language.language_metrics`), and a note with its greedy continuation of the first prompt;
    the latency columns time one prefill of the example window.

    A model may return a tensor, a transformers ``ModelOutput``, a dict or a tuple: the scored tensor is
    ``logits`` if present, else ``sentence_embedding``, else ``last_hidden_state``, else the first tensor (of a
    tuple: its first item); ``output`` names another key (or index) (:func:`shrink.eval.metrics.select_output`).
    Every model is measured in eval mode and left with the training mode and buffers (e.g. BatchNorm running
    statistics) it had.
    """
    if isinstance(data, DataBundle):
        eval_data, metric = data.test, metric or data.metric
        example_inputs = data.example_inputs if example_inputs is None else example_inputs
    else:
        eval_data = data
    reference = _checked_reference(models, data, metric, example_inputs, reference, batch_sizes, batch_axis)
    assert isinstance(metric, str)  # checked just above: one of METRICS
    with evaluation_mode(models.values()):
        if isinstance(data, LanguageData) and metric == "perplexity":
            rows = _language_rows(models, data, reference, example_inputs, notes, progress)
        else:
            rows = _metric_rows(models, eval_data, metric, reference, output, example_inputs, notes, progress)
        runners = [_runner(model) for model in models.values()]
        latency = _latency_together(runners, example_inputs, batch_sizes, threads, reps, warmup, batch_axis)
    for row, per_batch in zip(rows, latency, strict=True):
        row.latency = per_batch
    return Report(rows=rows, metric=metric, machine=machine_info(threads), title=title)


def _checked_reference(
    models: Mapping[str, Any],
    data: Any,
    metric: Any,
    example_inputs: Any,
    reference: str | None,
    batch_sizes: Any,
    batch_axis: Any = 0,
) -> str:
    """Check :func:`evaluate`'s arguments (naming the wrong one) and return the reference model's name."""
    if isinstance(batch_axis, bool) or batch_axis not in (0, 1):
        raise ConfigError(f"evaluate: batch_axis must be 0 or 1 (a time-major model's batch), got {batch_axis!r}")
    if metric not in METRICS:
        raise ConfigError(f"evaluate: metric must be one of {METRICS}, got {metric!r}")
    if metric == "perplexity" and not isinstance(data, LanguageData):
        raise ConfigError("evaluate: metric 'perplexity' needs a shrink.data.LanguageData (windows, prompts, decode)")
    if example_inputs is None:
        raise ConfigError("evaluate: example_inputs is required to measure MACs and latency")
    if not models:
        raise ConfigError("evaluate: no models given")
    reference = reference or next(iter(models))
    if reference not in models:
        raise ConfigError(f"evaluate: reference {reference!r} is not among the models {list(models)}")
    check_batch_sizes(batch_sizes, example_inputs, axis=batch_axis)
    for name, model in models.items():
        _check_not_meta(name, model)
    _check_inputs_not_meta(example_inputs, "evaluate: example_inputs")
    return reference


def _metric_rows(
    models: Mapping[str, Any],
    eval_data: Iterable[Any],
    metric: str,
    reference: str,
    output: OutputChoice,
    example_inputs: Any,
    notes: Mapping[str, list[str]] | None,
    progress: bool,
) -> list[Row]:
    ref_out = predict(_runner(models[reference]), eval_data, output)[0] if metric == "fidelity" else None
    rows = []
    for name, model in tqdm(models.items(), desc="evaluate", disable=not progress, leave=False):
        out, targets = predict(_runner(model), eval_data, output)
        if metric == "accuracy":
            metrics = {"accuracy": accuracy(out, targets)}
        elif metric == "mse":
            metrics = regression_errors(out, targets)
        else:
            assert ref_out is not None
            metrics = embedding_fidelity(ref_out, out)
        rows.append(_row(name, model, metrics, example_inputs, list((notes or {}).get(name, []))))
    return rows


def _language_rows(
    models: Mapping[str, Any],
    data: LanguageData,
    reference: str,
    example_inputs: Any,
    notes: Mapping[str, list[str]] | None,
    progress: bool,
) -> list[Row]:
    for name, model in models.items():
        if isinstance(model, OnnxModel):
            raise ConfigError(f"evaluate: {name!r} runs in ONNX Runtime; perplexity rows need a torch causal LM")
    scored = language_metrics(models, data.windows, data.prompts, reference, data.new_tokens, progress)
    rows = []
    for name, model in models.items():
        metrics, tokens = scored[name]
        sample = f"greedy continuation of prompt 1: {data.decode(tokens[0])!r}"
        rows.append(_row(name, model, metrics, example_inputs, [*(notes or {}).get(name, []), sample]))
    return rows


def check_batch_sizes(batch_sizes: Any, example_inputs: Any = None, where: str = "evaluate", axis: int = 0) -> None:
    """Raise ConfigError naming ``batch_sizes`` unless it is a non-empty list of ints from 1 to :data:`MAX_BATCH`
    whose repeated example input fits in half of this machine's memory."""
    if isinstance(batch_sizes, (str, bytes)) or not isinstance(batch_sizes, Sequence) or not batch_sizes:
        raise ConfigError(f"{where}: batch_sizes must be a non-empty list of ints, got {batch_sizes!r}")
    per_example = _bytes_per_example(example_inputs, axis)
    for b in batch_sizes:
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= MAX_BATCH:
            raise ConfigError(f"{where}: batch_sizes: {b!r} is not a batch size (an int from 1 to {MAX_BATCH})")
        if per_example * b > _memory_bytes() // 2:
            raise ConfigError(
                f"{where}: batch_sizes: {b} copies of the example input take {per_example * b / 2**30:.1f} GiB, "
                f"more than half of this machine's memory"
            )


def _bytes_per_example(x: Any, axis: int = 0) -> int:
    if isinstance(x, torch.Tensor):
        if not x.dim():
            return x.element_size()
        along = batch_axis_of(x, axis)
        return x.narrow(along, 0, min(1, x.shape[along])).numel() * x.element_size()
    if isinstance(x, Mapping):
        return sum(_bytes_per_example(v, axis) for v in x.values())
    if isinstance(x, (tuple, list)):
        return sum(_bytes_per_example(v, axis) for v in x)
    return 0


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no limit beyond MAX_BATCH
        return 2**62


def _check_not_meta(name: str, model: Any) -> None:
    if isinstance(model, nn.Module):
        check_not_meta(model, f"evaluate: model {name!r}")


def _check_inputs_not_meta(x: Any, where: str) -> None:
    for name, t in named_tensors(x, where):
        if t.is_meta:
            raise DataError(f"{name}: a tensor on the meta device (no values); pass real inputs")


def _latency_together(
    runners: list[Any],
    example_inputs: Any,
    batch_sizes: Sequence[int],
    threads: int,
    reps: int,
    warmup: int,
    batch_axis: int = 0,
) -> list[dict[str, dict[str, Any]]]:
    """Per runner: batch size -> latency statistics, every runner timed in the same interleaved rounds."""
    out: list[dict[str, dict[str, Any]]] = [{} for _ in runners]
    for b in batch_sizes:
        batch = repeat_batch(example_inputs, b, batch_axis)
        fns = [partial(run, batch) for run in runners]
        with torch.inference_mode():
            for fn in fns:
                for _ in range(warmup):
                    fn()
        # ``reps`` timed calls a model: 3 back to back in each of reps / 3 rounds (at least 3 rounds)
        stats = interleaved_stats(fns, threads=threads, rounds=max(3, reps // 3), calls=3, warmup=1, batch_size=b)
        for per_model, st in zip(out, stats, strict=True):
            per_model[str(b)] = st.to_dict()
    return out


def _row(name: str, model: Any, metrics: dict[str, float], example_inputs: Any, notes: list[str]) -> Row:
    kernels: dict[str, str] = {}
    if isinstance(model, OnnxModel):
        params = nonzero = None
        size, macs, runtime, execution = model.size_bytes, model.macs, model.runtime, model.execution
        kernels = dict(model.kernels)
        if kernels:
            notes = [*notes, f"kernels per layer: {kernel_summary(kernels)}"]
    else:
        runtime = getattr(model, "shrink_runtime", "torch eager")
        execution = getattr(model, "shrink_execution", "fp32")
        fig = getattr(model, "shrink_runtime_figures", None)  # a runtime copy (prepacked kernels): its source's
        if fig is not None:
            params, nonzero, size, macs = fig["params"], fig["nonzero_params"], fig["size_bytes"], fig["macs"]
        else:
            params, nonzero = count_params(model)
            size, macs = own_artifact_bytes(model) or artifact_bytes(model), count_macs(model, example_inputs)
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
        kernels=kernels,
    )
