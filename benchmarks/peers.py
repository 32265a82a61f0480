"""Peer quantizers (torchao, NNCF, Intel Neural Compressor) behind one signature, for side-by-side benchmarks.

``PEERS`` maps a method name to a :class:`PeerMethod`; ``run_peer(name, model, calibration, example_inputs)``
compresses a deep copy of ``model`` the way that tool's documentation shows, saves it the way that tool's users
would (``torch.save`` of the state_dict, or ``torch.export.save`` for PT2E graphs) and measures the real file. A
peer that fails — not installed, not supported on this CPU / torch build, wrong results — comes back with its exact
error string instead of stopping the run. The peers live in the benchmark environment only (``make bench``).
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.common import run_measured
from shrink.data import split_batch

__all__ = ["PeerMethod", "PeerOutcome", "PEERS", "run_peer", "as_args", "call_positional"]


def _load_torchao() -> None:
    import torchao.quantization  # noqa: F401


def _load_nncf() -> None:
    # NNCF builds a C++ extension for nncf.quantize on first use (cached under ~/.cache/torch_extensions) and gives
    # up after 60 s by default; on 2 busy cores the build takes longer, so allow it and build it before any timing
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "900")
    import nncf.torch
    from nncf.torch.quantization.extensions import QuantizedFunctionsCPULoader

    lock = Path(QuantizedFunctionsCPULoader.get_build_dir()) / "lock"
    if lock.exists():  # torch's extension builder would wait on it forever
        raise RuntimeError(f"NNCF extension build lock {lock} is left from an interrupted build; delete it")
    nncf.torch.force_build_cpu_extensions()


def _load_inc() -> None:
    import neural_compressor.torch.export  # noqa: F401
    import neural_compressor.torch.quantization  # noqa: F401

    logging.getLogger("neural_compressor").setLevel(logging.WARNING)  # INFO logs a line per rewrite pass


#: per tool: imports (and NNCF's one-off extension build) done before the compress clock starts
_LOADERS: dict[str, Callable[[], None]] = {}
_LOADED: set[str] = set()


@dataclass(frozen=True)
class PeerMethod:
    tool: str
    scheme: str  # "W8A16", "W8A8", "W4A16", "W4A8": weight bits / activation bits
    compress: Callable[[nn.Module, list[Any], tuple[Any, ...]], nn.Module]
    execution: str
    save: str  # "state_dict" or "export"
    compiled: bool = False  # run through torch.compile (Inductor) after compressing, as the tool documents


#: what a compiled peer row adds to its execution label
COMPILED_LABEL = "torch.compile (Inductor, frozen, max-autotune; the settings of shrink's compiled rows)"


@dataclass
class PeerOutcome:
    """What one peer produced: a callable model (or None), bytes of its saved file, compress wall time, peak
    memory above the start, what the execution means, and the exact error when it failed."""

    runnable: Callable[..., Any] | None
    size_bytes: int | None
    seconds: float
    peak_mib: float
    execution: str
    error: str = ""  # why it failed; for a runnable result, why its size could not be measured
    compile_seconds: float = 0.0  # torch.compile time of a compiled row (not in ``seconds``)


def as_args(model: nn.Module, inputs: Any) -> tuple[Any, ...]:
    """Positional arguments for ``model`` from a batch's inputs (a dict is ordered by ``forward``'s signature):
    PT2E export needs positional example inputs."""
    if isinstance(inputs, dict):
        params = [p for p in inspect.signature(model.forward).parameters if p in inputs]
        return tuple(inputs[p] for p in params)
    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    return tuple(inputs)


def call_positional(model: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    return model(*args)


# --- torchao ------------------------------------------------------------------------------------------------------
def _torchao(config_factory: Callable[[], Any]) -> Callable[[nn.Module, list[Any], tuple[Any, ...]], nn.Module]:
    def compress(model: nn.Module, calibration: list[Any], example: tuple[Any, ...]) -> nn.Module:
        from torchao.quantization import quantize_

        quantize_(model, config_factory())  # Linear layers only (torchao's default filter)
        return model

    return compress


def _ao_int8_weight() -> Any:
    from torchao.quantization import Int8WeightOnlyConfig

    return Int8WeightOnlyConfig()


def _ao_int8_dynamic() -> Any:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig

    return Int8DynamicActivationInt8WeightConfig()


def _ao_int4_weight() -> Any:
    from torchao.quantization import IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerGroup

    return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32))


def _ao_int4_dynamic() -> Any:
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig
    from torchao.quantization.granularity import PerGroup

    return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(32))


# --- NNCF ---------------------------------------------------------------------------------------------------------
def _nncf_dataset(calibration: list[Any]) -> Any:
    import nncf

    return nncf.Dataset(calibration)  # NNCF calls model(**dict) / model(*tuple) / model(tensor) itself


def _nncf_weights(mode: str) -> Callable[[nn.Module, list[Any], tuple[Any, ...]], nn.Module]:
    def compress(model: nn.Module, calibration: list[Any], example: tuple[Any, ...]) -> nn.Module:
        import nncf

        kwargs = {} if mode == "INT8_ASYM" else {"group_size": 32, "ratio": 1.0, "all_layers": True}
        return nncf.compress_weights(
            model, mode=getattr(nncf.CompressWeightsMode, mode), dataset=_nncf_dataset(calibration), **kwargs
        )

    return compress


def _nncf_quantize(model: nn.Module, calibration: list[Any], example: tuple[Any, ...]) -> nn.Module:
    import nncf

    return nncf.quantize(model, _nncf_dataset(calibration), subset_size=min(300, 32 * len(calibration)))


# --- Intel Neural Compressor (3.x PyTorch API) ----------------------------------------------------------------------
def _inc_rtn(bits: int, group_size: int) -> Callable[[nn.Module, list[Any], tuple[Any, ...]], nn.Module]:
    def compress(model: nn.Module, calibration: list[Any], example: tuple[Any, ...]) -> nn.Module:
        from neural_compressor.torch.quantization import RTNConfig, convert, prepare

        return convert(prepare(model, RTNConfig(bits=bits, group_size=group_size)))

    return compress


def _dynamic_shapes(example: tuple[Any, ...]) -> tuple[Any, ...]:
    """Batch axis dynamic; for token tensors (2-D integers) the sequence axis too."""
    dyn = torch.export.Dim.DYNAMIC
    return tuple({0: dyn, 1: dyn} if t.dim() == 2 and not t.is_floating_point() else {0: dyn} for t in example)


def _inc_pt2e(static: bool) -> Callable[[nn.Module, list[Any], tuple[Any, ...]], nn.Module]:
    def compress(model: nn.Module, calibration: list[Any], example: tuple[Any, ...]) -> nn.Module:
        from neural_compressor.torch.export import export
        from neural_compressor.torch.quantization import DynamicQuantConfig, StaticQuantConfig, convert, prepare

        exported = export(model, example_inputs=example, dynamic_shapes=_dynamic_shapes(example))
        prepared = prepare(exported, StaticQuantConfig() if static else DynamicQuantConfig())
        # a forward pass between prepare and convert: for static it calibrates the activation observers; for
        # dynamic it is still needed, otherwise the weight observers never run and convert quantizes the weights
        # with scale 1.0 (almost all become 0)
        for batch in calibration if static else calibration[:1]:
            prepared(*as_args(model, batch))
        return convert(prepared)

    return compress


_AO, _NNCF, _INC = "torchao 0.18", "NNCF 3.4", "Intel Neural Compressor 3.10"
_LOADERS.update({_AO: _load_torchao, _NNCF: _load_nncf, _INC: _load_inc})
PEERS: dict[str, PeerMethod] = {
    "torchao int8 weight-only": PeerMethod(
        _AO,
        "W8A16",
        _torchao(_ao_int8_weight),
        "int8 weights (Int8Tensor), eager torch; Linear layers only",
        "state_dict",
    ),
    "torchao int8 dynamic": PeerMethod(
        _AO,
        "W8A8",
        _torchao(_ao_int8_dynamic),
        "int8 weights × dynamic int8 activations, eager torch; Linear only",
        "state_dict",
    ),
    "torchao int4 weight-only g32": PeerMethod(
        _AO,
        "W4A16",
        _torchao(_ao_int4_weight),
        "int4 weights, group 32 (IntxWeightOnly), eager; Linear only",
        "state_dict",
    ),
    "torchao int4 weights, int8 dynamic act g32": PeerMethod(
        _AO,
        "W4A8",
        _torchao(_ao_int4_dynamic),
        "int4 weights g32 × dynamic int8 activations, eager; Linear only",
        "state_dict",
    ),
    "NNCF compress_weights INT8": PeerMethod(
        _NNCF, "W8A16", _nncf_weights("INT8_ASYM"), "uint8 weights decompressed on the fly, eager torch", "state_dict"
    ),
    "NNCF compress_weights INT4_SYM g32": PeerMethod(
        _NNCF, "W4A16", _nncf_weights("INT4_SYM"), "int4 weights g32 decompressed on the fly, eager torch", "state_dict"
    ),
    "NNCF quantize (PTQ)": PeerMethod(
        _NNCF, "W8A8", _nncf_quantize, "fake-quant (simulated) in torch; real int8 needs OpenVINO", "state_dict"
    ),
    "INC RTN int8": PeerMethod(
        _INC, "W8A16", _inc_rtn(8, -1), "packed int8 weights dequantized per call (INCWeightOnlyLinear)", "state_dict"
    ),
    "INC RTN int4 g32": PeerMethod(
        _INC,
        "W4A16",
        _inc_rtn(4, 32),
        "packed int4 weights g32 dequantized per call (INCWeightOnlyLinear)",
        "state_dict",
    ),
    "INC static PT2E": PeerMethod(
        _INC, "W8A8", _inc_pt2e(static=True), "QDQ graph (PT2E), not torch.compile'd: fake-quant speed", "export"
    ),
    "INC dynamic PT2E": PeerMethod(
        _INC,
        "W8A8",
        _inc_pt2e(static=False),
        "dynamic QDQ graph (PT2E), not torch.compile'd: fake-quant speed",
        "export",
    ),
}


# torchao documents torch.compile for its int8 / int4 speed, and INC's PT2E graphs reach int8 kernels only through
# Inductor: each of those rows also runs compiled, with the compiler settings shrink's own compiled rows use
PEERS.update(
    {
        f"{name} + torch.compile": replace(
            m, compiled=True, execution=f"{m.execution.split(', eager')[0]}; {COMPILED_LABEL}"
        )
        for name, m in list(PEERS.items())
        if m.tool == _AO or "PT2E" in name
    }
)


def _compile(model: nn.Module, example: tuple[Any, ...]) -> tuple[Callable[..., Any], float]:
    """``model`` through shrink's :func:`compile_int8` settings, compiled at the example batch and at batch 1 (a
    graph of its own); returns the runner and the compile seconds."""
    from shrink.quant import compile_int8

    compiled = compile_int8(model, warmup=[example, tuple(t[:1] for t in example)], skip_guards=True)
    return (lambda *args: compiled(*args)), compiled.compile_seconds


class _LastErrors(logging.Handler):
    """Keeps the last ERROR records: INC logs the real cause of a failed export and then raises a generic error."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages = (self.messages + [record.getMessage()])[-2:]


def _saved_bytes(model: nn.Module, how: str, example: tuple[Any, ...]) -> int:
    with tempfile.TemporaryDirectory(prefix="peer-size-") as d:
        path = Path(d) / "model.pt2"
        if how == "export":
            torch.export.save(torch.export.export(model, example, dynamic_shapes=_dynamic_shapes(example)), path)
        else:
            torch.save(model.state_dict(), path)
        return os.path.getsize(path)


def _error_text(exc: BaseException, logged: list[str]) -> str:
    text = f"{type(exc).__name__}: {str(exc).strip()}"
    if logged and logged[-1] not in text:
        text += f" (logged: {logged[-1]})"
    return " ".join(text.split())[:600]


def _watch_logs() -> tuple[_LastErrors, list[logging.Logger]]:
    handler = _LastErrors()
    loggers = [logging.getLogger(), logging.getLogger("neural_compressor"), logging.getLogger("nncf")]
    for lg in loggers:
        lg.addHandler(handler)
    return handler, loggers


def run_peer(name: str, model: nn.Module, calibration: list[Any], example_inputs: Any) -> PeerOutcome:
    """Compress a copy of ``model`` with peer method ``name`` (calibration: a list of batches, example_inputs: one
    batch of inputs); never raises for the peer's own failures — they come back in ``error``."""
    method = PEERS[name]
    model = copy.deepcopy(model).eval()
    batches = [split_batch(b)[0] for b in calibration]
    example = as_args(model, example_inputs)
    handler, loggers = _watch_logs()
    try:
        try:
            if method.tool not in _LOADED:
                _LOADERS[method.tool]()
                _LOADED.add(method.tool)
            compressed, seconds, peak = run_measured(lambda: method.compress(model, batches, example))
        except Exception as exc:  # a failing peer is a result to report, not a crash of the benchmark run
            return PeerOutcome(
                None, None, float("nan"), float("nan"), method.execution, _error_text(exc, handler.messages)
            )
        if not isinstance(compressed, torch.fx.GraphModule):  # PT2E graphs refuse .eval(); they are in eval form
            compressed.eval()
        try:
            size, size_error = _saved_bytes(compressed, method.save, example), ""
        except Exception as exc:
            size, size_error = None, "saving failed: " + _error_text(exc, handler.messages)
        if not method.compiled:
            runner: Callable[..., Any] = lambda *args, m=compressed: m(*args)  # noqa: E731
            return PeerOutcome(runner, size, seconds, peak, method.execution, size_error)
        try:
            runner, compile_s = _compile(compressed, example)
        except Exception as exc:
            error = "torch.compile failed: " + _error_text(exc, handler.messages)
            return PeerOutcome(None, size, seconds, peak, method.execution, error)
        return PeerOutcome(runner, size, seconds, peak, method.execution, size_error, compile_s)
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
