"""ONNX export and ONNX Runtime execution.

``onnx(model, path, example_inputs)`` writes an ONNX file with a dynamic batch axis. Models that need a special
graph (quantized models export QDQ int8) provide ``shrink_export_onnx(path, example_inputs, opset, output_names)``.
The graph's outputs are named after the keys of a mapping output (a transformers ``ModelOutput``, a dict), so
``OnnxModel(path)(inputs, output="logits")`` picks the same output as the torch model's ``["logits"]``.
``OnnxModel`` runs a file in ONNX Runtime and is called like the torch model it came from.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from shrink._parametrize import baked_copy
from shrink.data import call_model, evaluation_mode
from shrink.errors import ConfigError, ModelError
from shrink.export.lstm_int8 import export_int8_lstms

__all__ = [
    "onnx", "trace_to_onnx", "write_onnx", "output_names_of", "OnnxModel", "DEFAULT_OPSET", "graph_execution"
]  # fmt: skip

DEFAULT_OPSET = 17


class _KeywordsToPositional(nn.Module):
    """Calls ``model(**dict(zip(names, args)), **constants)``: the TorchScript exporter mis-binds keyword inputs of
    models whose forward has many optional parameters (transformers models), so dict inputs are exported
    positionally; a dict's non-tensor values (a float option) are constants of the graph, not inputs."""

    def __init__(self, model: nn.Module, names: list[str], constants: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.model, self.names, self.constants = model, names, dict(constants or {})

    def forward(self, *args: torch.Tensor) -> Any:
        return self.model(**dict(zip(self.names, args, strict=True)), **self.constants)


def _only_given_arguments(model: nn.Module, n_args: int) -> nn.Module:
    """``model`` as the exporter should see it when called with ``n_args`` positional inputs: the TorchScript exporter
    appends every later parameter's default to the inputs, so a ``forward(x, temperature=1.0)`` got a graph input
    for ``temperature``. A shallow copy (same submodules, so the same node names) whose ``forward`` takes ``*args``
    hides them; the model itself is returned when no such default exists."""
    import inspect

    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return model
    later = [p for p in params[n_args:] if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not any(p.default is not p.empty and p.default is not None for p in later):
        return model
    view = copy.copy(model)
    bound = model.forward

    def forward(*args: Any) -> Any:
        return bound(*args)

    object.__setattr__(view, "forward", forward)
    return view


def _dynamic_axes(example: Any, keywords: bool) -> dict[int, str]:
    rank = example.dim() if isinstance(example, torch.Tensor) else 1
    axes = {0: "batch", 1: "sequence"} if keywords else {0: "batch"}
    return {axis: name for axis, name in axes.items() if axis < rank}


#: ``{input or output name: {axis: label}}``, as ``torch.onnx.export`` takes them
DynamicAxes = Mapping[str, Mapping[int, str]]


def _given_axes(
    given: DynamicAxes, args: tuple[Any, ...], names: list[str], output_names: Sequence[str]
) -> dict[str, dict[int, str]]:
    """The user's ``dynamic_axes``, checked against the graph's input and output names and the inputs' ranks."""
    ranks = {n: (a.dim() if isinstance(a, torch.Tensor) else 0) for n, a in zip(names, args, strict=True)}
    checked: dict[str, dict[int, str]] = {}
    for name, axes in given.items():
        where = f"ONNX export: dynamic_axes[{name!r}]"
        if name not in [*names, *output_names]:
            raise ConfigError(
                f"{where}: no input or output of the graph has that name; its inputs are {names} and its outputs "
                f"{list(output_names)}"
            )
        if not isinstance(axes, Mapping) or not all(isinstance(a, int) and isinstance(v, str) for a, v in axes.items()):
            raise ConfigError(
                f"{where} must map axis numbers to labels, e.g. {{0: 'sequence', 1: 'batch'}}; got {axes!r}"
            )
        bad = [a for a in axes if name in ranks and not 0 <= a < ranks[name]]
        if bad:
            raise ConfigError(f"{where} names axes {bad}, but that input has rank {ranks[name]} in example_inputs")
        checked[name] = dict(axes)
    return checked


def _warn_time_major(model: nn.Module, args: tuple[Any, ...]) -> None:
    """Warn when a ``batch_first=False`` recurrent layer's batch (axis 1 of what it reads) is not the size of axis 0
    of the first input: the default axes (axis 0 is the batch) then leave the real batch fixed. A model that takes
    ``(batch, time, features)`` and transposes for the layer is not warned about."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.RNNBase) and not m.batch_first}
    first = next((a for a in args if isinstance(a, torch.Tensor) and a.dim() > 0), None)
    if not layers or first is None:
        return
    seen: dict[str, int] = {}

    def record(name: str) -> Any:
        def hook(_: nn.Module, inputs: tuple[Any, ...]) -> None:
            x = inputs[0]  # a packed sequence or an unbatched input has nothing to check
            if isinstance(x, torch.Tensor) and x.dim() == 3:
                seen.setdefault(name, x.shape[1])

        return hook

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in layers.items()]
    try:
        with evaluation_mode([model]), torch.no_grad():
            model(*args)
    finally:
        for h in hooks:
            h.remove()
    for name, batch in seen.items():
        if batch != first.shape[0]:
            warnings.warn(
                f"ONNX export: {type(layers[name]).__name__} {name!r} (batch_first=False) reads a batch of {batch}, "
                f"but the dynamic 'batch' axis is axis 0 of the inputs (size {first.shape[0]}): the graph would run "
                "only at the example's batch size. Pass dynamic_axes, e.g. {'input': {0: 'sequence', 1: 'batch'}, "
                "'output': {0: 'batch'}}, to say which axes vary",
                stacklevel=4,
            )
            return


#: dict input values that become constants of the graph (a float option); anything else but a tensor is refused
_CONSTANT_TYPES = (bool, int, float, str, type(None))


def _input_names(example_inputs: Any) -> tuple[tuple[Any, ...], list[str], bool]:
    if isinstance(example_inputs, dict):
        for key, value in example_inputs.items():
            if not isinstance(value, (torch.Tensor, *_CONSTANT_TYPES)):
                raise ConfigError(
                    f"ONNX export: example input {key!r} is a {type(value).__name__}; a dict input's values must be "
                    "tensors (graph inputs) or plain numbers / strings / None (constants of the graph)"
                )
        tensors = {k: v for k, v in example_inputs.items() if isinstance(v, torch.Tensor)}
        return tuple(tensors.values()), list(tensors), True
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), ["input"], False
    args = tuple(example_inputs)
    return args, [f"input{i}" for i in range(len(args))], False


def output_names_of(model: nn.Module, example_inputs: Any, input_names: Sequence[str] = ()) -> list[str]:
    """The ONNX output names for ``model``'s output on ``example_inputs``: a mapping of tensors (transformers
    ``ModelOutput``, dict) gives its keys unless one of them is also an input's name (ONNX names must be unique), a
    tuple of tensors ``output``, ``output1``, ...; anything else ``output`` (for a nested output the exporter numbers
    the rest). Runs the model once, in eval mode, with its buffers restored afterwards."""
    with evaluation_mode([model]), torch.no_grad():
        out = call_model(model, example_inputs)
    if isinstance(out, Mapping) and out and all(isinstance(v, torch.Tensor) for v in out.values()):
        if not set(map(str, out)) & set(input_names):
            return [str(k) for k in out]
        out = tuple(out.values())
    if isinstance(out, (tuple, list)) and out and all(isinstance(v, torch.Tensor) for v in out):
        return ["output"] + [f"output{i}" for i in range(1, len(out))]
    return ["output"]


def _call_hook(
    hook: Any, path: Path, example_inputs: Any, opset: int, output_names: list[str] | None, axes: DynamicAxes | None
) -> Path:
    """A model's ``shrink_export_onnx`` hook; ``output_names`` only for a hook that takes them (the three-argument
    form ``(path, example_inputs, opset)`` came first), ``dynamic_axes`` only when given, to a hook that takes it
    (by name or through ``**kwargs``)."""
    import inspect

    try:
        params = list(inspect.signature(hook).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
    keywords = any(p.kind is p.VAR_KEYWORD for p in params)
    kwargs: dict[str, Any] = {}
    if axes is not None:
        if not keywords and "dynamic_axes" not in {p.name for p in params}:
            name = getattr(hook, "__qualname__", type(hook).__qualname__)
            raise ConfigError(f"ONNX export: this model's exporter ({name}) does not take dynamic_axes")
        kwargs["dynamic_axes"] = axes
    if positional >= 4:
        return Path(hook(path, example_inputs, opset, output_names, **kwargs))
    if keywords:
        kwargs["output_names"] = output_names
    return Path(hook(path, example_inputs, opset, **kwargs))


#: layers that run on PyTorch's own kernels only: torch.ao's quantized modules (``Int8Dynamic(backend="torch")``) and
#: shrink's run-time kernel forms (``to_torch_int8`` / ``to_torch_weight_only``), whose packed weights do not trace
_KERNEL_ONLY_PACKAGES = ("torch.ao.nn.quantized.modules.", "torch.ao.nn.quantized.dynamic.", "shrink.quant.runtimes.")
#: float helpers that live among them and trace like any module (a quantizable model's FloatFunctional adds)
_TRACEABLE = "torch.ao.nn.quantized.modules.functional_modules"


def _check_exportable(model: nn.Module) -> None:
    for name, module in model.named_modules():
        package = type(module).__module__
        if package.startswith(_KERNEL_ONLY_PACKAGES) and package != _TRACEABLE:
            raise ModelError(
                f"ONNX export: layer {name or '(the model)'!r} is a {type(module).__module__}.{type(module).__name__}, "
                "which runs on PyTorch's kernels only and has no ONNX form: export the model as quantized for ONNX "
                "Runtime (Int8Dynamic's default backend 'onnxruntime', where a GRU, having no int8 kernel there, "
                "stays float), or before to_torch_int8 / to_torch_weight_only"
            )


def onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    example_inputs: Any,
    *,
    opset: int = DEFAULT_OPSET,
    output_names: Sequence[str] | None = None,
    dynamic_axes: DynamicAxes | None = None,
) -> Path:
    """Export ``model`` to ONNX at ``path`` (atomically) with a dynamic batch axis (and sequence axis for dicts).
    The graph's inputs are the tensors of ``example_inputs``: a dict's non-tensor values (a float option) are baked
    in as constants, and ``forward`` parameters left out keep their defaults, as constants too.
    ``output_names`` default: :func:`output_names_of` (a dict / ``ModelOutput``'s keys).
    ``dynamic_axes``: ``{input or output name: {axis: label}}`` for the names it gives, in place of the default
    (axis 0 ``"batch"``; a dict's tensors also axis 1 ``"sequence"``), which the names left out keep: e.g.
    ``{"input": {0: "sequence", 1: "batch"}, "output": {0: "batch"}}`` for a ``batch_first=False`` LSTM. A single
    tensor input is named ``input``, a tuple's ``input0``, ``input1``, ..., a dict's by its keys."""
    _check_exportable(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(output_names) if output_names is not None else None  # None: named by the exporter that traces
    hook = getattr(model, "shrink_export_onnx", None)
    if hook is not None:
        out = _call_hook(hook, path, example_inputs, opset, names, dynamic_axes)
    else:
        out = trace_to_onnx(
            copy.deepcopy(baked_copy(model)), path, example_inputs, opset=opset, output_names=names,
            dynamic_axes=dynamic_axes,
        )  # fmt: skip
    export_int8_lstms(model, Path(out))  # LSTMs int8_dynamic rounded run on ONNX Runtime's int8 LSTM kernel
    return out


def trace_to_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    example_inputs: Any,
    *,
    opset: int = DEFAULT_OPSET,
    output_names: Sequence[str] | None = None,
    dynamic_axes: DynamicAxes | None = None,
) -> Path:
    """Trace ``model`` in eval mode (its mode is restored afterwards) to ONNX at ``path`` through a temporary file
    and a rename; dynamic batch axis, and sequence axis for dict inputs, unless ``dynamic_axes`` (as in :func:`onnx`)
    says otherwise for a name. No file is left behind on failure. ``output_names`` default: :func:`output_names_of`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    args, names, keywords = _input_names(example_inputs)
    if output_names is None:
        output_names = output_names_of(model, example_inputs, names)
    traced: nn.Module
    if keywords:
        constants = {k: v for k, v in example_inputs.items() if not isinstance(v, torch.Tensor)}
        traced = _KeywordsToPositional(model, names, constants)
    else:
        traced = _only_given_arguments(model, len(args))
    # dict inputs (token ids, masks) get a sequence axis too, where they have one
    dynamic = {n: _dynamic_axes(a, keywords) for n, a in zip(names, args, strict=True)}
    dynamic.update({n: {0: "batch"} for n in output_names})
    if dynamic_axes is not None:
        dynamic.update(_given_axes(dynamic_axes, args, names, output_names))
    else:
        _warn_time_major(traced, args)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            write_onnx(traced, args, path, names, list(output_names), dynamic, opset)
    finally:
        model.train(was_training)
    return path


def write_onnx(
    module: nn.Module,
    args: tuple[Any, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
) -> Path:
    """``torch.onnx.export`` (the TorchScript exporter, constants folded) of ``module`` on ``args`` to ``path``
    through a temporary file and a rename: a failed export leaves no file behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings():
            # shrink chooses the TorchScript exporter on purpose (dynamo=False): its deprecation notices are not
            # the user's to act on
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
            torch.onnx.export(
                module,
                args,
                str(tmp),
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                dynamo=False,
                do_constant_folding=True,
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


#: ops that quantize activations at run time: the graph then runs integer kernels
_INT8_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger"}


def graph_execution(path: str | os.PathLike[str]) -> str:
    """What running the ONNX file at ``path`` means, read from its ops: ``"int8 (real, integer kernels)"`` when
    activations are quantized, ``"fp32 compute, int8 weights (dequantized)"`` for weight-only DequantizeLinear,
    ``"int4 weights (...)"`` for ONNX Runtime's block-quantized ops (``MatMulNBits``),
    ``"fp16"`` for a half-precision graph, else ``"fp32"``."""
    import onnx as onnx_lib

    graph = onnx_lib.load(str(path), load_external_data=False).graph
    ops = {n.op_type for n in graph.node}
    if ops & _INT8_OPS:
        return "int8 (real, integer kernels)"
    if ops & {"MatMulNBits", "GatherBlockQuantized"}:
        return "int4 weights (ONNX Runtime MatMulNBits, real low-bit kernels)"
    if "DequantizeLinear" in ops:
        return "fp32 compute, int8 weights (dequantized)"
    if any(i.type.tensor_type.elem_type == onnx_lib.TensorProto.FLOAT16 for i in graph.input):
        return "fp16"
    return "fp32"


class OnnxModel:
    """An ONNX file running in ONNX Runtime, callable with torch tensors like the original model.

    ``execution`` says what the figures mean, e.g. ``"fp32"`` or ``"int8 (real, integer kernels)"``; by default it
    is read from the graph (:func:`graph_execution`), so an int8 graph is never labelled fp32.

    Every session has its own thread pool, whose workers by default keep spinning after a run; with several
    sessions in one process (a benchmark comparing models) the idle ones' spinning workers take the cores of the one
    running: eight sessions of the same digits CNN timed 0.9 to 1.65 ms on 2 cores. Workers here stop spinning when
    a run ends (``session.force_spinning_stop``); they still spin between the ops of a run. ``disabled_optimizers``
    names ONNX Runtime graph transformers to leave out.
    """

    runtime = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        threads: int = 2,
        execution: str | None = None,
        macs: int | None = None,
        disabled_optimizers: Sequence[str] = (),
    ) -> None:
        self.path = Path(path)
        self.execution = execution if execution is not None else graph_execution(self.path)
        self.macs, self.threads = macs, threads
        #: module name -> the ONNX Runtime kernel that computes it (filled by the exporters that know the model)
        self.kernels: dict[str, str] = {}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.force_spinning_stop", "1")
        self.session = ort.InferenceSession(
            str(self.path), opts, providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled_optimizers)
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def feeds(self, inputs: Any) -> dict[str, np.ndarray]:
        if isinstance(inputs, dict):
            return {k: v.numpy() for k, v in inputs.items() if k in self.input_names}
        if isinstance(inputs, torch.Tensor):
            inputs = (inputs,)
        return {n: t.numpy() for n, t in zip(self.input_names, inputs, strict=True)}

    def run_numpy(self, feeds: dict[str, np.ndarray], output: str | int | None = None) -> np.ndarray:
        """The graph's first output, or the one named (or numbered) ``output``."""
        if output is None:
            return self.session.run(None, feeds)[0]
        return self.session.run([self._output_name(output)], feeds)[0]

    def _output_name(self, output: str | int) -> str:
        if isinstance(output, str) and output in self.output_names:
            return output
        if (
            isinstance(output, int)
            and not isinstance(output, bool)
            and -len(self.output_names) <= output < len(self.output_names)
        ):
            return self.output_names[output]
        raise ConfigError(f"output={output!r}: {self.path.name} has no such output (outputs: {self.output_names})")

    def __call__(self, inputs: Any, output: str | int | None = None) -> torch.Tensor:
        """Run on torch inputs; ``output`` picks a graph output by name or index (default: the first)."""
        return torch.from_numpy(self.run_numpy(self.feeds(inputs), output))

    @property
    def size_bytes(self) -> int:
        return os.path.getsize(self.path)


def to_onnxruntime(
    model: nn.Module,
    example_inputs: Any,
    *,
    threads: int = 2,
    execution: str | None = None,
    directory: str | os.PathLike[str] | None = None,
) -> OnnxModel:
    """Export ``model`` and open it in ONNX Runtime (in ``directory``, or a temporary one kept for the process)."""
    directory = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="shrink-onnx-"))
    from shrink.export.kernels import layer_kernels, weight_layers

    path = onnx(model, directory / "model.onnx", example_inputs)
    session = OnnxModel(path, threads=threads, execution=execution)
    session.kernels = layer_kernels(path, weight_layers(model))
    return session


__all__.append("to_onnxruntime")
