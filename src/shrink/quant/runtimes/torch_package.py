"""Int8 models compiled ahead of time: one AOTInductor package (``.pt2``) that a new process loads in seconds.

:func:`shrink.quant.compile_int8` compiles in the process that runs the model, each time that process starts: about
a minute or two for MiniLM on 2 cores. Inductor's on-disk cache shortens it only partly there, because the frozen
graph holds oneDNN's prepacked int8 weights, which Inductor's FX-graph cache cannot pickle (and AOTAutograd's cache
skips frozen graphs), so every new process traces, freezes and generates the kernels again; only the autotuning
results and the built C++ kernels are reused.

:func:`package_int8` compiles once instead, with ``torch.export`` and AOTInductor under the same Inductor settings
(:data:`~shrink.quant.runtimes.torch_token.INDUCTOR_SETTINGS`: frozen weights, autotuned GEMMs), into a single
file holding the generated kernels and the int8 weights. :func:`load_int8_package` loads it into any process with
the same PyTorch version on a CPU with the instruction sets it was built for; it does not need shrink's model
classes, the float model or a compiler.

For the export, each :class:`~shrink.quant.runtimes.torch_token.TokenInt8Linear` is written in PyTorch 2 export's
quantized form (uint8 rows and int8 codes dequantized, then a float linear), which Inductor's freezing pass turns
back into oneDNN's int8 GEMM with prepacked weights (or its own AMX / VNNI int8 micro-kernel): oneDNN's prepacked
weights are opaque tensors that ``torch.export`` cannot carry. The package computes what the compiled model does.
"""

from __future__ import annotations

import copy
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch import nn

from shrink._atomic import atomic_write_bytes
from shrink.errors import ConfigError, DataError, FileFormatError, ModelError, UnsupportedOpError
from shrink.quant.runtimes.torch_token import TokenInt8Linear, inductor_settings, kernel_codes

__all__ = ["package_int8", "load_int8_package", "PackagedInt8", "package_cpu_isa"]


class _ExportFormTokenInt8Linear(TokenInt8Linear):
    """A :class:`TokenInt8Linear` whose int8 product is written in PyTorch 2 export's quantized pattern."""

    weight_codes: torch.Tensor

    def _int_gemm(self, q: torch.Tensor) -> torch.Tensor:
        import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers the quantized_decomposed ops)

        ops = torch.ops.quantized_decomposed
        rows = ops.dequantize_per_tensor.default(q, 1.0, 0, 0, 255, torch.uint8)
        weight = ops.dequantize_per_channel.default(
            self.weight_codes, self.weight_scale, self.weight_zero_point, 0, -128, 127, torch.int8
        )
        return F.linear(rows, weight)


def _export_form(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose int8 Linears hold their int8 codes instead of oneDNN's prepacked weights (which
    cannot be copied or exported). The float tensors are copied too; ``model`` is not touched. A float model (no
    int8 layers) is copied as it is."""
    from shrink.quant.runtimes.torch_backend import TorchInt8Layer

    static = [name for name, m in model.named_modules() if isinstance(m, TorchInt8Layer)]
    if static:
        raise UnsupportedOpError(
            f"package_int8: {static[0]} (and {len(static) - 1} more) runs on torch.ao's quantized ops, which "
            "torch.export cannot carry; package models whose int8 layers are per-token (Int8Dynamic with "
            "granularity='token'), or export to ONNX (shrink.export.onnx)"
        )
    from shrink.quant.layers.modules import _QuantBase

    simulated = [name for name, m in model.named_modules() if isinstance(m, _QuantBase)]
    if simulated:
        raise ModelError(
            f"package_int8: {simulated[0]} is a simulated (fake-quant) layer; convert the quantized model with "
            "shrink.quant.to_torch_int8 first, so that its int8 layers run on int8 kernels"
        )
    layers = [m for m in model.modules() if isinstance(m, TokenInt8Linear)]
    memo: dict[int, Any] = {id(m.packed_weight): None for m in layers}
    memo |= {id(m.source): m.source for m in layers}  # the simulated layers: read, not copied
    out = copy.deepcopy(model, memo)
    for layer in out.modules():
        if isinstance(layer, TokenInt8Linear):
            del layer._buffers["packed_weight"]
            codes = kernel_codes(layer.source.weight_int, layer.source.weight_scale)[0]
            layer.register_buffer("weight_codes", codes.contiguous())
            layer.__class__ = _ExportFormTokenInt8Linear
    return out.eval()


class _Positional(nn.Module):
    """``model`` called with every input tensor as a positional argument, the example's keyword arguments last in
    their order: what is exported and compiled, whatever the model's own signature (``torch.export`` cannot give
    sizes to the inputs of a ``forward(*args, **kwargs)``)."""

    def __init__(self, model: nn.Module, positional: int, keywords: list[str]) -> None:
        super().__init__()
        self.model, self.positional, self.keywords = model, positional, keywords

    def forward(self, *tensors: torch.Tensor) -> Any:
        named = dict(zip(self.keywords, tensors[self.positional :], strict=True))
        return self.model(*tensors[: self.positional], **named)


def _example(example_inputs: Any) -> tuple[list[str], tuple[torch.Tensor, ...], int, list[str]]:
    """The example as (input names, tensors in that order, number of positional inputs, keyword names)."""
    if isinstance(example_inputs, dict):
        args, keywords = (), [str(k) for k in example_inputs]
        values = tuple(example_inputs.values())
    else:
        args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        keywords, values = [], args
    names = [f"argument {i}" for i in range(len(args))] + keywords
    for name, value in zip(names, values, strict=True):
        if not isinstance(value, torch.Tensor):
            raise DataError(f"package_int8: example input {name} is a {type(value).__name__}; inputs must be tensors")
    return names, values, len(args), keywords


def _export(model: nn.Module, example_inputs: Any, dynamic_shapes: Any) -> tuple[Any, list[str]]:
    """``torch.export`` of ``model`` on ``example_inputs``, every input positional (:class:`_Positional`); returns
    the program and the input names. Without a ``dynamic_shapes`` spec (one entry per input, in order), export
    first finds which dimensions may vary (``Dim.AUTO``), then exports again with each of them allowed from size 1
    (export otherwise assumes 2 and more, and a batch or sequence of one would be outside the program's range), one
    size at a time; one the model cannot take at size 1 keeps 2."""
    from torch.export import Dim

    names, tensors, positional, keywords = _example(example_inputs)
    wrapped = _Positional(model, positional, keywords)

    def export(specs: Any) -> Any:
        with torch.no_grad():
            return torch.export.export(wrapped, tensors, dynamic_shapes=(tuple(specs),), strict=False)

    if dynamic_shapes is not None:
        return export(dynamic_shapes), names
    program = export([{d: Dim.AUTO for d in range(t.dim())} for t in tensors])
    sizes = [node.meta["val"].shape for node in _placeholders(program)]
    ranges = {str(e): _bounds(program, e) for e in program.range_constraints if e.is_Symbol}
    varying = (str(n.node.expr) for shape in sizes for n in shape if isinstance(n, torch.SymInt))
    symbols = [name for name in dict.fromkeys(varying) if name in ranges]

    def specs(from_one: set[str]) -> list[dict[int, Any]]:
        # one Dim per varying size, shared by the inputs whose sizes export found equal; the upper bounds export found
        dims = {n: Dim(n, min=1 if n in from_one else ranges[n][0], max=ranges[n][1]) for n in symbols}
        return [
            {
                d: dims.get(str(n.node.expr), Dim.STATIC) if isinstance(n, torch.SymInt) else Dim.STATIC
                for d, n in enumerate(shape)
            }
            for shape in sizes
        ]

    from_one: set[str] = set()
    for name in symbols:  # each varying size from 1 where the model allows it (one export each)
        try:
            program = export(specs(from_one | {name}))
            from_one.add(name)
        except Exception:  # torch.export's constraint error: the model needs this size >= 2
            continue
    return program, names


def _placeholders(program: Any) -> list[Any]:
    """The graph nodes of the program's user inputs, in order."""
    names = set(program.graph_signature.user_inputs)
    return [n for n in program.graph.nodes if n.op == "placeholder" and n.name in names]


def _bounds(program: Any, symbol: Any) -> tuple[int, int | None]:
    """The [min, max] an exported program allows a varying size (max ``None``: unbounded)."""
    import sympy
    from torch.utils._sympy.numbers import int_oo

    bounds = program.range_constraints[symbol]
    return int(bounds.lower), None if bounds.upper in (int_oo, sympy.oo) else int(bounds.upper)


def _input_spec(program: Any, names: list[str], tensors: tuple[torch.Tensor, ...]) -> list[dict[str, Any]]:
    """What the compiled graph accepts, input by input: name, dtype and each dimension's [min, max] size (``None``:
    no upper bound), from the exported program. The package's kernels do not check their inputs."""
    import sympy

    spec = []
    for name, value, node in zip(names, tensors, _placeholders(program), strict=True):
        dims: list[list[int | None]] = []
        for size in node.meta["val"].shape:
            expr = size.node.expr if isinstance(size, torch.SymInt) else sympy.Integer(size)
            if expr.is_number:  # a fixed size
                dims.append([int(expr), int(expr)])
            elif expr in program.range_constraints:
                dims.append(list(_bounds(program, expr)))
            else:  # a size tied to another input's (an expression of its symbol): checked by the sizes it follows
                dims.append([0, None])
        spec.append({"name": name, "dtype": str(value.dtype).removeprefix("torch."), "dims": dims})
    return spec


#: where the input spec lives inside the package (the archive's folder for extra files)
_SPEC_ENTRY = "extra/shrink_inputs.json"


def package_int8(
    model: nn.Module,
    path: str | Path,
    example_inputs: Any,
    dynamic_shapes: Any = None,
    max_autotune: bool = True,
) -> Path:
    """Compile a model from :func:`shrink.quant.to_torch_int8` ahead of time into an AOTInductor package at
    ``path`` (``.pt2``, written whole or not at all) and return the path; :func:`load_int8_package` loads it. As
    with :func:`~shrink.quant.compile_int8`, a float model (a bf16 cast, say) or a weight-only one from
    :func:`~shrink.quant.to_torch_weight_only` is compiled the same way.

    ``example_inputs``: one batch as the model takes it (a dict is keyword arguments, a tuple positional ones).
    ``dynamic_shapes``: ``torch.export``'s spec for each input tensor, in order (positional, then keyword); by
    default every dimension the model lets vary takes any size from 1, the others stay as in the example, so give a
    batch and sequence longer than 1 (a dimension of size 1 in the example stays 1). ``max_autotune``: as in
    :func:`~shrink.quant.compile_int8`. The package runs on CPUs with the instruction sets of the one that built it
    (:func:`package_cpu_isa`) and the same PyTorch version. Raises ModelError for simulated quantized layers (not
    converted by ``to_torch_int8``), UnsupportedOpError for layers on torch.ao's quantized ops (static int8 from
    ``to_torch_int8``)."""
    path = Path(path)
    if path.suffix != ".pt2":
        raise ConfigError(f"package_int8: {path} must end in .pt2 (AOTInductor's package format)")
    program, names = _export(_export_form(model), example_inputs, dynamic_shapes)
    spec = _input_spec(program, names, _example(example_inputs)[1])
    from torch._inductor import aoti_compile_and_package, config

    buffer = io.BytesIO()
    # a shipped file never carries profiler scopes: with Inductor's kernel profiling on (a profiling session left
    # it on, say), each kernel of the package opens one on every call, whether a profiler runs or not (MiniLM int8,
    # 2 threads: 3.6 ms instead of 1.0 ms a sentence)
    settings = {**inductor_settings(model, max_autotune), "cpp.enable_kernel_profile": False}
    with config.patch(settings), torch.no_grad():
        aoti_compile_and_package(program, package_path=buffer)
    with zipfile.ZipFile(buffer, "a") as archive:
        root = archive.namelist()[0].split("/")[0]
        meta = {"inputs": spec, "kernels": _kernels(model)}
        archive.writestr(f"{root}/{_SPEC_ENTRY}", json.dumps(meta, indent=1))
    atomic_write_bytes(path, buffer.getvalue())
    return path


_INT8_KERNELS = "int8 (real, PyTorch int8 kernels)"


def _kernels(model: nn.Module) -> str:
    """What the packaged model's Linears run on, in words."""
    from shrink.quant.runtimes.torch_weight_only import weight_only_kernels

    if any(isinstance(m, TokenInt8Linear) for m in model.modules()):
        return _INT8_KERNELS
    return weight_only_kernels(model) or "float"


def _kernels_of(meta: dict[str, Any]) -> str:
    if "kernels" in meta:
        return str(meta["kernels"])
    return _INT8_KERNELS if meta.get("int8", True) else "float"  # packages written before 2026-12-04


def package_cpu_isa(path: str | Path) -> set[str]:
    """The CPU instruction sets an AOTInductor package's kernels were generated for (e.g. ``{"AVX512",
    "AVX512_VNNI", "AMX_TILE"}``), read from the package's metadata. Raises FileFormatError for other files."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("_metadata.json") and "/aotinductor/" in n]
            isa = {
                word for name in names for word in str(json.loads(archive.read(name)).get("AOTI_CPU_ISA", "")).split()
            }
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{path}: not an AOTInductor package ({exc})") from exc
    if not names:
        raise FileFormatError(f"{path}: not an AOTInductor package (no aotinductor metadata inside)")
    return isa


def _cpu_isa_here() -> set[str]:
    from torch._inductor.cpu_vec_isa import valid_vec_isa_list

    return {word for isa in valid_vec_isa_list() for word in str(isa).upper().split()}


class PackagedInt8(nn.Module):
    """An int8 model loaded from an AOTInductor package: call it like the model it was built from. Calls run in
    ``torch.inference_mode``. Inputs are checked against what the package was built for (names, dtypes, sizes:
    its kernels do not check them) and made contiguous (they index memory assuming it)."""

    def __init__(self, runner: Any, path: Path, inputs: list[dict[str, Any]], kernels: str = "float") -> None:
        super().__init__()
        self.runner, self.path, self.inputs = runner, path, inputs
        self.shrink_execution = f"{kernels}, AOTInductor package (compiled ahead of time)"
        self._names = [i["name"] for i in inputs]
        # the runner's own __call__ parses its output layout from JSON on every call (~30 us of a 1 ms MiniLM
        # sentence): parsed once here, and the kernels are called on the flat input list directly
        self._out_spec = pytree.treespec_loads(runner.loader.get_call_spec()[1])
        self._dtypes = {i["name"]: getattr(torch, i["dtype"]) for i in inputs}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        given = ({f"argument {i}": a for i, a in enumerate(args)} | kwargs) if args else kwargs
        if len(given) != len(self._names) or any(name not in given for name in self._names):
            raise DataError(f"{self.path.name}: called with inputs {sorted(given)}; the package takes {self._names}")
        for spec in self.inputs:
            value = given[spec["name"]]
            ok = isinstance(value, torch.Tensor) and value.dtype == self._dtypes[spec["name"]]
            if not (ok and _fits(value.shape, spec["dims"])):
                _check_input(self.path.name, spec, value)  # raises, naming what is wrong
        flat = [given[name].contiguous() for name in self._names]
        with torch.inference_mode():
            return pytree.tree_unflatten(self.runner.loader.boxed_run(flat), self._out_spec)

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}"


def _check_input(where: str, spec: dict[str, Any], value: Any) -> None:
    name = spec["name"]
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{where}: input {name} is a {type(value).__name__}, the package takes a tensor")
    if str(value.dtype).removeprefix("torch.") != spec["dtype"]:
        raise DataError(f"{where}: input {name} has dtype {value.dtype}, the package was built for {spec['dtype']}")
    dims = spec["dims"]
    if not _fits(value.shape, dims):
        allowed = ", ".join(f"{lo}" if lo == hi else f"{lo}..{hi if hi is not None else ''}" for lo, hi in dims)
        raise DataError(f"{where}: input {name} of shape {tuple(value.shape)}; the package takes ({allowed})")


def _fits(shape: torch.Size, dims: list[tuple[int, int | None]]) -> bool:
    """Whether ``shape`` has the rank of ``dims`` and each size within its ``[low, high]`` (high None: no limit)."""
    return len(shape) == len(dims) and all(
        lo <= size and (hi is None or size <= hi) for size, (lo, hi) in zip(shape, dims, strict=False)
    )


def load_int8_package(path: str | Path) -> PackagedInt8:
    """Load a package written by :func:`package_int8`. Raises FileNotFoundError for a missing file,
    FileFormatError for a file that is not such a package, and UnsupportedOpError when this CPU lacks an
    instruction set its kernels were generated for (they would stop the process with an illegal instruction)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_int8_package: no file at {path}")
    missing = package_cpu_isa(path) - _cpu_isa_here()
    if missing:
        raise UnsupportedOpError(
            f"{path}: built for CPU instruction sets {sorted(missing)} that this CPU lacks (it has "
            f"{sorted(_cpu_isa_here())}); run package_int8 again on this kind of CPU"
        )
    with zipfile.ZipFile(path) as archive:
        entries = [n for n in archive.namelist() if n.endswith("/" + _SPEC_ENTRY)]
        if not entries:
            raise FileFormatError(f"{path}: an AOTInductor package, but not one written by shrink's package_int8")
        meta = json.loads(archive.read(entries[0]))
    from torch._inductor import aoti_load_package

    return PackagedInt8(aoti_load_package(str(path)), path, meta["inputs"], _kernels_of(meta))
