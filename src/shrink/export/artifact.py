"""shrink's model file: a safetensors file (no pickle) plus a JSON manifest in its metadata.

* Sparse tensors (≥ 50% zeros) are stored as a packed bitmask plus the non-zero values, so a pruned model's file is
  really small.
* Quantized weight codes are stored at their own bit width (2, 3, 4 ... bits per weight, bit-packed; see
  :mod:`shrink.export.codes`), whatever integer type holds them in memory.
* The manifest records each layer's shape arguments and simple attributes (e.g. a pruned attention's head count),
  so :func:`load` rebuilds a pruned architecture from the original factory without code changes.
* Only ``torch.nn`` layer types and shrink's own layer types are ever constructed from a manifest.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as st_save
from torch import nn

from shrink._atomic import atomic_write_bytes
from shrink._float_cast import reinstall_float_cast
from shrink._parametrize import baked_copy
from shrink.data import check_not_meta
from shrink.errors import FileFormatError, ModelError
from shrink.export.codes import code_bits_of, encode_codes
from shrink.export.decode import (
    FORMAT_VERSION,
    SIMPLE_TYPES,
    current_class_path,
    decode_state,
    read_file,
    short_ints,
    state_mismatch,
)
from shrink.export.scaled import encode_scaled, scaled_weights

__all__ = ["save", "load", "artifact_bytes", "FORMAT_VERSION", "register_layer", "atomic_write_bytes"]

SPARSE_MIN_ZERO_FRACTION = 0.5
SPARSE_MIN_NUMEL = 64

_CONV_ARGS = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "bias",
    "padding_mode",
)
_STD_LAYERS: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Linear: ("in_features", "out_features", "bias"),
    nn.Conv1d: _CONV_ARGS,
    nn.Conv2d: _CONV_ARGS,
    nn.BatchNorm1d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.BatchNorm2d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.LayerNorm: ("normalized_shape", "eps", "elementwise_affine", "bias"),
    nn.Embedding: ("num_embeddings", "embedding_dim", "padding_idx"),
    nn.GroupNorm: ("num_groups", "num_channels", "eps", "affine"),
}
#: layers of well-kept libraries that pruning reshapes, by "module:Class" -> constructor argument attributes
_LIBRARY_LAYERS: dict[str, tuple[str, ...]] = {"transformers.pytorch_utils:Conv1D": ("nf", "nx")}
#: shrink's own layer classes that may be rebuilt from a manifest: "module:Class" -> class
_SHRINK_LAYERS: dict[str, type[nn.Module]] = {}
_SIMPLE = SIMPLE_TYPES


def register_layer(cls: type[nn.Module]) -> type[nn.Module]:
    """Allow a shrink layer class to be rebuilt by :func:`load`. It must implement ``shrink_manifest() -> dict`` and
    the classmethod ``shrink_from_manifest(args) -> module``."""
    _SHRINK_LAYERS[f"{cls.__module__}:{cls.__qualname__}"] = cls
    return cls


def _layer_args(module: nn.Module) -> dict[str, Any] | None:
    if type(module) in _STD_LAYERS:
        args = {}
        for key in _STD_LAYERS[type(module)]:
            value = getattr(module, key)
            if key == "bias":
                value = value is not None if not isinstance(value, bool) else value
            args[key] = list(value) if isinstance(value, tuple) else value
        return args
    library = _LIBRARY_LAYERS.get(f"{type(module).__module__}:{type(module).__qualname__}")
    if library is not None:
        return {key: getattr(module, key) for key in library}
    manifest = getattr(module, "shrink_manifest", None)
    return manifest() if manifest is not None else None


def _attrs(module: nn.Module) -> dict[str, Any]:
    """A module's simple attributes (numbers, strings, tuples of ints such as a norm's ``normalized_shape``)."""
    out: dict[str, Any] = {}
    for k, v in vars(module).items():
        if k.startswith("_") or k == "training":
            continue
        if isinstance(v, _SIMPLE):
            out[k] = v
        elif isinstance(v, tuple) and short_ints(v):
            out[k] = list(v)
    return out


def _restore_attrs(target: nn.Module, attrs: dict[str, Any]) -> None:
    """Set the saved attributes the module already has (a pruned attention's head count, a pruned norm's shape)
    and shrink's own string labels; a tuple attribute only from a list of ints of the same length."""
    for key, value in attrs.items():
        current = getattr(target, key, None)
        if isinstance(current, _SIMPLE) or (key.startswith("shrink_") and isinstance(value, str)):
            setattr(target, key, value)
        elif isinstance(current, tuple) and short_ints(current) and short_ints(value) and len(value) == len(current):
            setattr(target, key, tuple(value))


def _resize_sliced(target: nn.Module, prefix: str, state: dict[str, torch.Tensor]) -> None:
    """Give the tensors pruning sliced in ``target`` (its ``shrink_sliced`` names) the file's shapes, so that a
    layer shrink cannot rebuild (a subclass, a bare per-channel parameter) takes the pruned weights; the new tensors
    are as large as the file's, and are filled by the state dict."""
    for name in str(getattr(target, "shrink_sliced", "")).split(","):
        saved = state.get(prefix + name)
        param, buf = target._parameters.get(name), target._buffers.get(name)
        if saved is None:
            continue
        if param is not None and saved.dim() == param.dim():
            target._parameters[name] = nn.Parameter(
                torch.empty(saved.shape, dtype=param.dtype), requires_grad=param.requires_grad
            )
        elif buf is not None and saved.dim() == buf.dim():
            target._buffers[name] = torch.empty(saved.shape, dtype=buf.dtype)


def _build_manifest(model: nn.Module) -> dict[str, Any]:
    modules = {}
    for name, module in model.named_modules():
        entry: dict[str, Any] = {"class": f"{type(module).__module__}:{type(module).__qualname__}"}
        args = _layer_args(module)
        if args is not None:
            entry["args"] = args
        attrs = _attrs(module)
        if attrs:
            entry["attrs"] = attrs
        modules[name] = entry
    return {"format": "shrink", "version": FORMAT_VERSION, "root": type(model).__qualname__, "modules": modules}


def _encode(
    state: dict[str, torch.Tensor], code_bits: dict[str, int], scaled: dict[str, int] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, Any] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for key, t in state.items():
        t = t.detach().cpu()
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if t.numel() and ident in seen:
            layout[key] = {"alias": seen[ident]}
            continue
        seen[ident] = key
        if key in code_bits:
            stored, layout[key] = encode_codes(key, t, code_bits[key])
            tensors.update(stored)
            continue
        packed = encode_scaled(key, t, scaled[key]) if scaled and key in scaled else None
        if packed is not None:
            tensors.update(packed[0])
            layout[key] = packed[1]
            continue
        zeros = t.numel() - int(torch.count_nonzero(t)) if t.numel() else 0
        if t.is_floating_point() and t.numel() >= SPARSE_MIN_NUMEL and zeros >= SPARSE_MIN_ZERO_FRACTION * t.numel():
            flat = t.reshape(-1)
            nz = flat != 0
            tensors[key + "@mask"] = torch.from_numpy(np.packbits(nz.numpy()))
            tensors[key + "@values"] = flat[nz].contiguous()
            layout[key] = {"sparse": list(t.shape)}
        else:
            tensors[key] = t.contiguous()
    return tensors, layout


def save(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Save ``model``'s weights and architecture manifest to ``path`` atomically; returns the path."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"save() takes a torch.nn.Module, got {type(model).__name__}")
    check_not_meta(model, f"save {Path(path).name}: model")
    _check_storable(model, Path(path).name)
    model = baked_copy(model)
    tensors, layout = _encode(model.state_dict(), code_bits_of(model), scaled_weights(model))
    manifest = _build_manifest(model)
    manifest["layout"] = layout
    data = st_save(tensors, metadata={"shrink_manifest": json.dumps(manifest)})
    atomic_write_bytes(path, data)
    return Path(path)


#: modules of this package are run-time kernel forms (PyTorch's packed int4 / oneDNN int8 weights, laid out for this
#: machine's CPU): :func:`load` cannot rebuild them, so :func:`save` refuses them instead of writing a dead file
_RUNTIME_PACKAGE = "shrink.quant.runtimes."


def _check_storable(model: nn.Module, name: str) -> None:
    for sub, module in model.named_modules():
        if type(module).__module__.startswith(_RUNTIME_PACKAGE):
            raise ModelError(
                f"save {name}: layer {sub or '(the model)'!r} is a {type(module).__name__}, a run-time kernel form "
                "(to_torch_int8 / to_torch_weight_only / shrink.llm.quantize_weight_only), which shrink.save cannot "
                "store: save the model before that conversion and convert again after shrink.load"
            )


def artifact_bytes(model: nn.Module, tmp_dir: str | os.PathLike[str] | None = None) -> int:
    """Size in bytes of the file :func:`save` writes for ``model`` (really written, then measured; where the bytes
    go: :func:`shrink.export.size.artifact_size`)."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=tmp_dir) as d:
        path = save(model, Path(d) / "model.shrink")
        return os.path.getsize(path)


def _argless_torch_layer(cls_path: str) -> bool:
    """Whether ``cls_path`` names a ``torch.nn`` layer class (built without arguments when saved without any)."""
    module_name, _, qualname = cls_path.partition(":")
    if not module_name.startswith("torch.nn.modules."):
        return False
    try:
        cls = getattr(importlib.import_module(module_name), qualname, None)
    except ImportError:
        return False
    return isinstance(cls, type) and issubclass(cls, nn.Module)


def _rebuild(cls_path: str, args: dict[str, Any], where: str) -> nn.Module:
    if cls_path in _SHRINK_LAYERS:
        return _SHRINK_LAYERS[cls_path].shrink_from_manifest(args)  # type: ignore[attr-defined]
    module_name, _, qualname = cls_path.partition(":")
    std = {f"{c.__module__}:{c.__qualname__}": c for c in _STD_LAYERS}
    if cls_path not in std and not args and _argless_torch_layer(cls_path):
        try:
            return getattr(importlib.import_module(module_name), qualname)()
        except (TypeError, ValueError, RuntimeError) as exc:
            raise FileFormatError(f"{where}: cannot build {qualname} without arguments: {exc}") from None
    if cls_path in _LIBRARY_LAYERS:
        if set(args) != set(_LIBRARY_LAYERS[cls_path]) or not all(isinstance(v, int) for v in args.values()):
            raise FileFormatError(f"{where}: bad arguments for {qualname}: {args!r}")
        return getattr(importlib.import_module(module_name), qualname)(**args)
    if cls_path not in std:
        if module_name.startswith("shrink."):
            try:
                importlib.import_module(module_name)  # registers the layer class
            except ImportError:
                raise FileFormatError(f"{where}: unknown shrink module {module_name!r}") from None
            if cls_path in _SHRINK_LAYERS:
                return _SHRINK_LAYERS[cls_path].shrink_from_manifest(args)  # type: ignore[attr-defined]
        raise FileFormatError(f"{where}: refusing to build layer class {cls_path!r} (not a torch.nn or shrink layer)")
    cls = std[cls_path]
    kwargs = dict(args)
    for key in ("kernel_size", "stride", "padding", "dilation", "normalized_shape"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise FileFormatError(f"{where}: bad arguments for {qualname}: {exc}") from None


def _rebuild_on_meta(cls_path: str, args: dict[str, Any], where: str) -> nn.Module:
    """Build a layer without allocating its tensors: its size is only trusted once the file's data matches it."""
    try:
        with torch.device("meta"):
            return _rebuild(cls_path, args, where)
    except FileFormatError:
        raise
    except Exception as exc:  # a layer whose constructor needs real data (e.g. calls .item())
        raise FileFormatError(f"{where}: cannot rebuild {cls_path!r} from {args!r}: {exc}") from None


def _set_submodule(model: nn.Module, name: str, module: nn.Module, where: str) -> None:
    parent_name, _, child = name.rpartition(".")
    try:
        parent = model.get_submodule(parent_name) if parent_name else model
    except AttributeError:
        raise ModelError(f"{where}: saved layer {name!r} has no parent in the model built by the factory") from None
    setattr(parent, child, module)


def _materialize(
    model: nn.Module, rebuilt: dict[str, tuple[str, dict[str, Any]]], state: dict[str, torch.Tensor], where: str
) -> None:
    """Rebuild for real the layers that still hold meta tensors (non-persistent buffers) after loading."""
    for name, (cls_path, args) in rebuilt.items():
        module = model.get_submodule(name)
        if not any(t.is_meta for t in (*module.parameters(), *module.buffers())):
            continue
        real = _rebuild(cls_path, args, f"{where}: layer {name!r}")
        prefix = name + "."
        real.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, assign=True)
        _set_submodule(model, name, real, where)


def load(path: str | os.PathLike[str], factory: Callable[[], nn.Module]) -> nn.Module:
    """Rebuild the model saved at ``path``: ``factory()`` builds the original architecture, layers whose shapes
    or types changed (pruned, quantized, decomposed) are rebuilt from the manifest, then the weights are loaded.

    A damaged or hostile file raises FileFormatError; a file that does not fit ``factory``'s model raises
    ModelError. Nothing in the file is unpickled, and rebuilt layers are sized by the file's data, not its claims.
    """
    manifest, raw = read_file(Path(path))
    where = str(path)
    state = decode_state(raw, manifest.get("layout", {}), where)
    model = factory()
    if not isinstance(model, nn.Module):
        raise TypeError(f"load(): factory returned {type(model).__name__}, not a torch.nn.Module")
    modules = manifest.get("modules", {})
    rebuilt: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, entry in modules.items():
        if not name:
            continue
        cls_path, args = current_class_path(entry["class"]), entry.get("args")
        try:
            current = model.get_submodule(name)
        except AttributeError:
            current = None
        current_cls = f"{type(current).__module__}:{type(current).__qualname__}" if current is not None else None
        if args is None and current is not None and current_cls != cls_path and _argless_torch_layer(cls_path):
            args = {}  # e.g. a BatchNorm folded away and replaced by nn.Identity
        if args is not None and (current is None or current_cls != cls_path or _layer_args(current) != args):
            _set_submodule(model, name, _rebuild_on_meta(cls_path, args, f"{where}: layer {name!r}"), where)
            rebuilt[name] = (cls_path, args)
        elif current is None:
            raise ModelError(f"{where}: saved layer {name!r} does not exist in the model built by the factory")
    for name, entry in modules.items():
        try:
            target = model.get_submodule(name) if name else model
        except AttributeError:
            raise ModelError(f"{where}: saved layer {name!r} does not exist in the model") from None
        _restore_attrs(target, entry.get("attrs", {}))
        if name not in rebuilt:
            _resize_sliced(target, f"{name}." if name else "", state)
    mismatch = state_mismatch(model.state_dict(), state)
    if mismatch:
        raise ModelError(f"{where}: weights do not match the architecture: {mismatch}")
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelError(f"{where}: weights do not match the architecture: {exc}") from None
    _materialize(model, rebuilt, state, where)
    _retie(model, manifest.get("layout", {}))
    reinstall_float_cast(model)  # a FloatCast model takes and returns fp32 again
    return model.eval()


def _retie(model: nn.Module, layout: dict[str, Any]) -> None:
    """Make every aliased tensor (tied weights) the same Parameter object again, as it was when saved."""
    for key, info in layout.items():
        if "alias" not in info:
            continue
        owner_name, _, attr = key.rpartition(".")
        target_owner, _, target_attr = info["alias"].rpartition(".")
        owner, target = model.get_submodule(owner_name), model.get_submodule(target_owner)
        value = getattr(target, target_attr)
        if isinstance(value, nn.Parameter) and attr in owner._parameters:
            owner._parameters[attr] = value
        elif attr in owner._buffers:
            owner._buffers[attr] = value


def state_digest(model: nn.Module) -> str:
    """SHA-256 of every tensor in ``model``'s state dict (names, dtypes, shapes, bytes)."""
    import hashlib

    h = hashlib.sha256()
    for key, t in baked_copy(model).state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def own_artifact_bytes(model: nn.Module) -> int | None:
    """The size of a compressed file a stage wrote for exactly this model (e.g. Deep Compression's ``.dcz``), or
    None: the stage records ``shrink_artifact = {"bytes": n, "digest": state_digest(model)}`` and the figure is used
    only while the weights are unchanged."""
    record = getattr(model, "shrink_artifact", None)
    if isinstance(record, dict) and record.get("digest") == state_digest(model):
        return int(record["bytes"])
    return None
