"""The measured CPU target: a latency lookup table built by timing each layer configuration on this machine.

A configuration is a layer's shape (at its kept width) and how it executes: fp32 or int8 kernels, in ONNX Runtime
or PyTorch eager. Bit widths below 8 run on the int8 kernels (no int4 CPU kernels) and unstructured sparsity runs on
the dense kernels, so they share those entries. Each configuration is built as a one-layer model with random
weights and run with the profile's thread count (warm-up, median of ``reps``).

An entry is the layer's *marginal* time: the one-layer session minus an empty (identity) session on the same input,
timed interleaved, so the per-call cost of a session (feeding, fetching, scheduling) is not charged once per layer —
a model pays it once (:mod:`shrink.hw.calibrate` fits it, with the cost of int8/fp32 boundaries, from a few
end-to-end measurements). Entries are cached on disk under ``cache_dir("hw")`` keyed by machine, runtime versions,
threads and this measuring method, so the table is measured once per machine.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import tempfile
from pathlib import Path

import onnxruntime
import torch
from torch import nn

from shrink._atomic import atomic_write_bytes
from shrink._cache import cache_dir
from shrink.errors import ModelError
from shrink.eval.harness import cpu_name
from shrink.eval.latency import measure_latency
from shrink.export.onnx import OnnxModel
from shrink.hw.layers import LayerSpec
from shrink.hw.policy import LayerChoice
from shrink.hw.profile import MeasuredSpec

__all__ = ["LatencyTable", "execution_kind", "layer_module"]

_METHOD = "marginal-v3"  # layer session minus identity session (no spinning between runs); part of the cache key
_FLOOR_MS = 1e-4  # a marginal time is never reported as zero or negative (noise on tiny layers)


def execution_kind(choice: LayerChoice, spec: MeasuredSpec) -> str:
    """What really runs for ``choice``: ``"int8"`` kernels for <= 8 bits where the runtime has them, else fp32."""
    if spec.runtime == "onnxruntime" and spec.int8_kernels and choice.bits <= 8:
        return "int8"
    return "fp32"


def layer_module(spec: LayerSpec) -> nn.Module:
    """A one-layer model of ``spec``'s shape with random weights."""
    if spec.kind == "linear":
        return nn.Linear(spec.in_channels, spec.out_channels, bias=spec.bias).eval()
    if spec.kind == "conv2d":
        return nn.Conv2d(
            spec.in_channels,
            spec.out_channels,
            _dims2(spec.kernel, spec, "kernel"),
            stride=_dims2(spec.stride, spec, "stride"),
            padding=_dims2(spec.padding, spec, "padding"),
            groups=spec.groups,
            bias=spec.bias,
        ).eval()
    return nn.Conv1d(
        spec.in_channels,
        spec.out_channels,
        _dims1(spec.kernel, spec, "kernel"),
        stride=_dims1(spec.stride, spec, "stride"),
        padding=_dims1(spec.padding, spec, "padding"),
        groups=spec.groups,
        bias=spec.bias,
    ).eval()


def _dims2(value: tuple[int, ...], spec: LayerSpec, field: str) -> tuple[int, int]:
    """A Conv2d geometry field as the pair torch's signature names (LayerSpec stores any length)."""
    if len(value) != 2:
        raise ModelError(f"layer {spec.name!r} (conv2d): {field} should have 2 entries, got {value!r}")
    return value[0], value[1]


def _dims1(value: tuple[int, ...], spec: LayerSpec, field: str) -> tuple[int]:
    """A Conv1d geometry field as the 1-tuple torch's signature names."""
    if len(value) != 1:
        raise ModelError(f"layer {spec.name!r} (conv1d): {field} should have 1 entry, got {value!r}")
    return (value[0],)


class LatencyTable:
    """Median latency (ms) per layer configuration and execution kind, measured on demand and cached on disk."""

    def __init__(self, spec: MeasuredSpec, path: Path | None = None) -> None:
        self.spec = spec
        ident = json.dumps([cpu_name(), torch.__version__, onnxruntime.__version__, spec.threads, spec.reps, _METHOD])
        digest = hashlib.sha1(ident.encode()).hexdigest()[:12]
        self.path = path or cache_dir("hw") / f"latency-{digest}.json"
        self.entries: dict[str, float] = {}
        self.measured_now = 0  # entries timed by this object (not read from the cache)
        if self.path.exists():
            self.entries = json.loads(self.path.read_text(encoding="utf-8"))["entries"]

    @staticmethod
    def key(spec: LayerSpec, runtime: str, kind: str) -> str:
        return f"{runtime}|{kind}|{spec.key()}"

    def latency_ms(self, layer: LayerSpec, choice: LayerChoice, runtime: str | None = None) -> float:
        """Latency of ``layer`` (already at its kept width) under ``choice``; measured if not in the table."""
        runtime = runtime or self.spec.runtime
        kind = execution_kind(choice, self.spec.model_copy(update={"runtime": runtime}))
        k = self.key(layer, runtime, kind)
        if k not in self.entries:
            self._merge_from_disk()  # another table object (search, allocator) may have measured it meanwhile
        if k not in self.entries:
            self.entries[k] = self._measure(layer, runtime, kind)
            self.measured_now += 1
            self.save()
        return self.entries[k]

    def _merge_from_disk(self) -> None:
        if self.path.exists():
            try:
                disk = json.loads(self.path.read_text(encoding="utf-8"))["entries"]
            except (ValueError, KeyError):
                return
            self.entries = {**disk, **self.entries}

    def save(self) -> None:
        """Write the table, keeping entries other objects wrote to the same file (one value per configuration)."""
        self._merge_from_disk()
        body = {
            "cpu": cpu_name(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "threads": self.spec.threads,
            "entries": self.entries,
        }
        atomic_write_bytes(self.path, json.dumps(body, indent=1, sort_keys=True).encode())

    def _measure(self, layer: LayerSpec, runtime: str, kind: str) -> float:
        torch.manual_seed(0)
        module = layer_module(layer)
        x = torch.randn(layer.in_shape)
        if runtime == "torch":
            fns = [lambda: module(x), lambda: x.clone()]
        else:
            fns = [self._ort_runner(module, x, kind), self._ort_runner(nn.Identity(), x, "fp32")]
        rounds: list[list[float]] = [[], []]
        for _ in range(3):  # interleaved: load changes hit layer and empty session alike
            for i, fn in enumerate(fns):
                stats = measure_latency(
                    fn,
                    batch_size=layer.in_shape[0],
                    threads=self.spec.threads,
                    warmup=3,
                    reps=max(3, self.spec.reps // 3),
                    min_time_s=0.02,
                )
                rounds[i].append(stats.median_ms)
        return max(statistics.median(rounds[0]) - statistics.median(rounds[1]), _FLOOR_MS)

    def _ort_runner(self, module: nn.Module, x: torch.Tensor, kind: str):
        from shrink.export.onnx import onnx as export_onnx
        from shrink.hw.ort_int8 import export_int8

        with tempfile.TemporaryDirectory(prefix="shrink-hw-") as tmp:
            if kind == "int8":
                calib = [torch.randn_like(x) for _ in range(4)]
                path = export_int8(module, Path(tmp) / "layer.onnx", x, calib)
            else:
                path = export_onnx(module, Path(tmp) / "layer.onnx", x)
            session = OnnxModel(path, threads=self.spec.threads)  # the session keeps the model in memory
        feeds = session.feeds(x)
        return lambda: session.run_numpy(feeds)
