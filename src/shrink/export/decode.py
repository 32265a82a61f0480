"""Reading shrink model files defensively: every field of the manifest is checked before it is used.

A model file may be truncated, corrupted or hostile. Reading it must either succeed or raise
:class:`~shrink.errors.FileFormatError` naming the file and the entry; it must never unpickle, never build a layer
class outside ``torch.nn``/shrink, and never allocate more memory than the file's own bytes justify (a sparse tensor
of ``n`` elements needs an ``n``-bit mask in the file, so a huge declared shape needs a huge file).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from shrink.errors import FileFormatError
from shrink.export.codes import check_codes_layout, decode_codes
from shrink.export.scaled import check_scaled_layout, decode_scaled

__all__ = [
    "read_file",
    "decode_state",
    "check_manifest",
    "state_mismatch",
    "current_class_path",
    "FORMAT_VERSION",
    "SIMPLE_TYPES",
    "MAX_ATTR_INTS",
    "short_ints",
    "MOVED_MODULES",
]

FORMAT_VERSION = 2
#: versions this shrink reads: 1 had no bit-packed code tensors (layout kinds "sparse" and "alias" only)
READABLE_VERSIONS = (1, 2)
SIMPLE_TYPES = (bool, int, float, str)


#: shrink modules that moved after files naming them were written: old module -> where the class lives now
MOVED_MODULES: dict[str, str] = {
    "shrink.quant.qparams": "shrink.quant.numerics.qparams",
    "shrink.quant.ste": "shrink.quant.numerics.ste",
    "shrink.quant.fixedpoint": "shrink.quant.numerics.fixedpoint",
    "shrink.quant.observers": "shrink.quant.algorithms.observers",
    "shrink.quant.calibrate": "shrink.quant.algorithms.calibrate",
    "shrink.quant.gptq": "shrink.quant.algorithms.gptq",
    "shrink.quant.group_rounding": "shrink.quant.algorithms.group_rounding",
    "shrink.quant.smooth": "shrink.quant.algorithms.smooth",
    "shrink.quant.lsq": "shrink.quant.algorithms.lsq",
    "shrink.quant.fold": "shrink.quant.algorithms.fold",
    "shrink.quant.zeroq_data": "shrink.quant.algorithms.zeroq_data",
    "shrink.quant.onnx_export": "shrink.quant.onnx.export",
    "shrink.quant.onnx_ops": "shrink.quant.onnx.ops",
    "shrink.quant.onnx_nbits": "shrink.quant.onnx.nbits",
    "shrink.quant.modules": "shrink.quant.layers.modules",
    "shrink.quant.qat_modules": "shrink.quant.layers.qat_modules",
    "shrink.quant.binary_layers": "shrink.quant.layers.binary_layers",
    "shrink.quant.packed": "shrink.quant.layers.packed",
    "shrink.quant.lowbit": "shrink.quant.layers.lowbit",
    "shrink.quant.convert": "shrink.quant.layers.convert",
    "shrink.quant.torch_backend": "shrink.quant.runtimes.torch_backend",
    "shrink.quant.torch_token": "shrink.quant.runtimes.torch_token",
    "shrink.quant.intonly": "shrink.quant.runtimes.intonly",
    "shrink.quant.intonly_ops": "shrink.quant.runtimes.intonly_ops",
    "shrink.prune": "shrink.pruning",
    "shrink.prune.magnitude": "shrink.pruning.magnitude",
    "shrink.prune.masks": "shrink.pruning.masks",
    "shrink.prune.nm": "shrink.pruning.nm",
    "shrink.prune.nm_layers": "shrink.pruning.nm_layers",
    "shrink.prune.nm_pattern": "shrink.pruning.nm_pattern",
    "shrink.prune.penalty": "shrink.pruning.penalty",
    "shrink.prune.schedule": "shrink.pruning.schedule",
    "shrink.prune.structured": "shrink.pruning.structured",
    "shrink.prune.structured.channel": "shrink.pruning.structured.channel",
    "shrink.prune.structured.config": "shrink.pruning.structured.config",
    "shrink.prune.structured.importance": "shrink.pruning.structured.importance",
    "shrink.prune.structured.lasso": "shrink.pruning.structured.lasso",
    "shrink.prune.structured.layers": "shrink.pruning.structured.layers",
    "shrink.prune.structured.slicing": "shrink.pruning.structured.slicing",
    "shrink.prune.unstructured": "shrink.pruning.unstructured",
    "shrink.distill": "shrink.distillation",
    "shrink.distill.hints": "shrink.distillation.hints",
    "shrink.distill.losses": "shrink.distillation.losses",
    "shrink.distill.objective": "shrink.distillation.objective",
    "shrink.distill.stage": "shrink.distillation.stage",
    "shrink.distill.student": "shrink.distillation.student",
    "shrink.search": "shrink.autosearch",
    "shrink.search.allocate": "shrink.autosearch.allocate",
    "shrink.search.apply": "shrink.autosearch.apply",
    "shrink.search.compress": "shrink.autosearch.compress",
    "shrink.search.export": "shrink.autosearch.export",
    "shrink.search.file_budget": "shrink.autosearch.file_budget",
    "shrink.search.latency_plan": "shrink.autosearch.latency_plan",
    "shrink.search.mixed_precision": "shrink.autosearch.mixed_precision",
    "shrink.search.options": "shrink.autosearch.options",
    "shrink.search.result": "shrink.autosearch.result",
    "shrink.search.search": "shrink.autosearch.search",
    "shrink.search.sensitivity": "shrink.autosearch.sensitivity",
    "shrink.search.trials": "shrink.autosearch.trials",
}


def current_class_path(cls_path: str) -> str:
    """``module:Class`` as the code has it now (a file written before a module moved names its old home)."""
    module, sep, qualname = cls_path.partition(":")
    return f"{MOVED_MODULES.get(module, module)}{sep}{qualname}"


#: largest dimension a shape in a manifest may declare (2**40 elements is 4 TiB of fp32)
_MAX_DIM = 2**40


def read_file(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The checked manifest and the raw tensors of a shrink model file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no shrink model file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:  # validates the header against the file size; no pickle
            meta = f.metadata() or {}
            raw = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except Exception as exc:  # safetensors raises its own error types for malformed headers
        raise FileFormatError(f"{path}: not a readable shrink model file ({exc})") from None
    if "shrink_manifest" not in meta:
        raise FileFormatError(f"{path}: safetensors file without a shrink manifest")
    try:
        manifest = json.loads(meta["shrink_manifest"])
    except (ValueError, RecursionError) as exc:
        raise FileFormatError(f"{path}: corrupted manifest ({type(exc).__name__}: {exc})") from None
    check_manifest(manifest, str(path))
    return manifest, raw


def _fail(where: str, msg: str) -> FileFormatError:
    return FileFormatError(f"{where}: {msg}")


def check_manifest(manifest: Any, where: str) -> None:
    """Raise FileFormatError unless ``manifest`` has the structure :func:`shrink.save` writes."""
    if not isinstance(manifest, dict) or manifest.get("format") != "shrink":
        raise _fail(where, "manifest is not a shrink manifest")
    if manifest.get("version") not in READABLE_VERSIONS:
        versions = " and ".join(map(str, READABLE_VERSIONS))
        raise _fail(where, f"format version {manifest.get('version')!r}, this shrink reads versions {versions}")
    modules = manifest.get("modules", {})
    if not isinstance(modules, dict):
        raise _fail(where, "manifest 'modules' is not a mapping")
    for name, entry in modules.items():
        w = f"manifest module {name!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("class"), str):
            raise _fail(where, f"{w}: expected a mapping with a 'class' string")
        if not set(entry) <= {"class", "args", "attrs"}:
            raise _fail(where, f"{w}: unexpected keys {sorted(set(entry) - {'class', 'args', 'attrs'})}")
        if "args" in entry and not isinstance(entry["args"], dict):
            raise _fail(where, f"{w}: 'args' is not a mapping")
        attrs = entry.get("attrs", {})
        if not isinstance(attrs, dict) or not all(
            isinstance(k, str) and not k.startswith("_") and _attr_value(v) for k, v in attrs.items()
        ):
            raise _fail(where, f"{w}: 'attrs' must map public names to bool/int/float/str or short lists of ints")
    layout = manifest.get("layout", {})
    if not isinstance(layout, dict):
        raise _fail(where, "manifest 'layout' is not a mapping")
    for key, info in layout.items():
        if not isinstance(info, dict) or len(info) != 1 or not ({"sparse", "alias", "codes", "scaled"} & set(info)):
            expected = "{'sparse': shape}, {'alias': name}, {'codes': {...}} or {'scaled': {...}}"
            raise _fail(where, f"layout of {key!r}: expected {expected}, got {info!r}")
        if "alias" in info and not isinstance(info["alias"], str):
            raise _fail(where, f"layout of {key!r}: alias is not a tensor name")
        if "sparse" in info:
            _check_shape(info["sparse"], f"{where}: sparse tensor {key!r}")
        if "codes" in info:
            check_codes_layout(info["codes"], f"{where}: layout of code tensor {key!r}")
            _check_shape(info["codes"]["shape"], f"{where}: code tensor {key!r}")
        if "scaled" in info:
            check_scaled_layout(info["scaled"], f"{where}: layout of scaled tensor {key!r}")


def _check_shape(shape: Any, where: str) -> list[int]:
    if not isinstance(shape, list) or not all(type(s) is int and 0 <= s <= _MAX_DIM for s in shape):
        raise FileFormatError(f"{where}: shape {shape!r} is not a list of non-negative integers")
    if math.prod(shape) > _MAX_DIM:
        raise FileFormatError(f"{where}: shape {shape} declares more than 2**40 elements")
    return shape


def _unpack_sparse(key: str, shape: list[int], bits: Any, values: Any, where: str) -> torch.Tensor:
    numel = math.prod(shape)
    w = f"{where}: sparse tensor {key!r}"
    if bits.dtype != torch.uint8 or bits.dim() != 1:
        raise FileFormatError(f"{w}: mask must be a 1-D uint8 tensor, got {bits.dtype} of shape {tuple(bits.shape)}")
    if bits.numel() != (numel + 7) // 8:  # checked before anything of size numel is allocated
        raise FileFormatError(f"{w}: mask of {bits.numel()} bytes does not fit shape {shape} ({numel} elements)")
    if values.dim() != 1 or not values.is_floating_point():
        raise FileFormatError(f"{w}: values must be a 1-D float tensor, got {values.dtype} {tuple(values.shape)}")
    flags = np.unpackbits(bits.numpy())
    if flags[numel:].any():
        raise FileFormatError(f"{w}: mask has bits set past the end of the tensor")
    nz = torch.from_numpy(flags[:numel].astype(bool))
    count = int(nz.sum())
    if count != values.numel():
        raise FileFormatError(f"{w}: {values.numel()} values for {count} non-zeros")
    dense = torch.zeros(numel, dtype=values.dtype)
    dense[nz] = values
    return dense.reshape(shape)


def decode_state(raw: dict[str, torch.Tensor], layout: dict[str, Any], where: str) -> dict[str, torch.Tensor]:
    """The state dict stored in ``raw`` tensors: dense tensors as they are, sparse ones and bit-packed codes
    unpacked, aliases shared.

    ``layout`` must have passed :func:`check_manifest`.
    """
    sparse = {k: info["sparse"] for k, info in layout.items() if "sparse" in info}
    aliases = {k: info["alias"] for k, info in layout.items() if "alias" in info}
    codes = {k: info["codes"] for k, info in layout.items() if "codes" in info}
    parts = {f"{k}@mask" for k in sparse} | {f"{k}@values" for k in sparse}
    parts |= {f"{k}@codes" for k in codes} | {f"{k}@mask" for k, c in codes.items() if c["sparse"]}
    scaled = {k: info["scaled"] for k, info in layout.items() if "scaled" in info}
    parts |= {f"{k}@codes" for k in scaled} | {f"{k}@scale" for k in scaled}
    state: dict[str, torch.Tensor] = {}
    for key, t in raw.items():
        if key in parts:
            continue
        if "@" in key:
            raise FileFormatError(f"{where}: tensor {key!r} belongs to no sparse or code layout entry")
        if key in layout:
            raise FileFormatError(f"{where}: {key!r} is stored both densely and in the layout")
        state[key] = t
    for key, shape in sparse.items():
        try:
            bits, values = raw[key + "@mask"], raw[key + "@values"]
        except KeyError:
            raise FileFormatError(f"{where}: sparse tensor {key!r} lacks its mask or values") from None
        state[key] = _unpack_sparse(key, shape, bits, values, where)
    for key, info in codes.items():
        state[key] = decode_codes(key, info, info["shape"], raw, where)
    for key, info in scaled.items():
        state[key] = decode_scaled(key, info, raw, where)
    for key, target in aliases.items():
        if target in aliases or target not in state:  # an alias always names a stored tensor: no chains, no loops
            raise FileFormatError(f"{where}: {key!r} aliases {target!r}, which is not a stored tensor")
        state[key] = state[target]
    return state


#: the longest int list a module attribute may hold (a conv's kernel size, a norm's normalized shape)
MAX_ATTR_INTS = 8


def short_ints(value: Any) -> bool:
    """A tuple or list of at most :data:`MAX_ATTR_INTS` ints (a conv's kernel size, a norm's normalized shape)."""
    return (
        isinstance(value, (tuple, list))
        and len(value) <= MAX_ATTR_INTS
        and all(isinstance(i, int) and not isinstance(i, bool) for i in value)
    )


def _attr_value(value: Any) -> bool:
    """A module attribute a manifest may carry: a simple value, or a short list of ints."""
    return isinstance(value, SIMPLE_TYPES) or (isinstance(value, list) and short_ints(value))


def state_mismatch(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str:
    """A short description of how ``got`` differs from ``expected`` (keys and shapes); empty if it fits."""

    def names(keys: list[str]) -> str:
        return ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")

    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k} {tuple(got[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in got and got[k].shape != v.shape
    ]
    parts = [
        f"{len(missing)} missing keys ({names(missing)})" if missing else "",
        f"{len(unexpected)} unexpected keys ({names(unexpected)})" if unexpected else "",
        f"{len(shapes)} shapes differ (file vs model: {names(shapes)})" if shapes else "",
    ]
    return "; ".join(p for p in parts if p)
