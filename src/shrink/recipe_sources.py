"""Where a recipe's model and data come from: zoo entries or the user's factories (imported with the recipe's folder
and the current directory on ``sys.path``) and a checkpoint (a relative path is read from the recipe's folder)."""

from __future__ import annotations

import importlib
import inspect
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from shrink.data import DataBundle, check_model_finite
from shrink.errors import ConfigError, FileFormatError, ModelError
from shrink.export.decode import state_mismatch
from shrink.recipe_checks import user_import_paths

if TYPE_CHECKING:
    from shrink.recipe import DataSpec, ModelSpec

__all__ = ["build_model", "build_data", "import_factory", "resolve_checkpoint"]


def resolve_checkpoint(checkpoint: str, folder: Path | None) -> Path:
    """``checkpoint`` as a path: a relative one is relative to ``folder`` (the recipe's) when given."""
    p = Path(checkpoint).expanduser()
    return folder / p if folder is not None and not p.is_absolute() else p


def import_factory(spec: str, where: str, folder: Path | None = None) -> Callable[..., Any]:
    """The factory named ``package.module:function``, imported with ``folder`` and the current directory on
    ``sys.path`` (see :func:`shrink.recipe_checks.user_import_paths`)."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ConfigError(f"{where}: factory must look like 'package.module:function', got {spec!r}")
    try:
        with user_import_paths(folder):
            module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may fail to import in any way; say which factory and why
        searched = f" (searched the recipe's folder {folder}, the current directory and sys.path)" if folder else ""
        raise ConfigError(f"{where}: cannot import factory {spec!r}: {type(exc).__name__}: {exc}{searched}") from None
    if not hasattr(module, attr):
        raise ConfigError(f"{where}: cannot import factory {spec!r}: module {module_name!r} has no {attr!r}")
    return getattr(module, attr)  # type: ignore[no-any-return]


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with its JSON header's length (8 bytes, little-endian) and then the header's '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def _load_checkpoint(model: nn.Module, path: str, where: str, folder: Path | None = None) -> None:
    p = resolve_checkpoint(path, folder)
    if not p.is_file():
        raise ConfigError(f"{where}: checkpoint {path!r} not found")
    try:
        if _is_safetensors(p):  # by content, whatever the suffix
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(str(p), "pt") as f:
                if "shrink_manifest" in (f.metadata() or {}):
                    raise FileFormatError(
                        f"{where}: checkpoint {path!r} is a whole shrink model file (shrink.save), not a state dict "
                        "for the factory's model: load it with shrink.load, or give the state dict it was made from"
                    )
            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    except FileFormatError:
        raise
    except pickle.UnpicklingError:
        raise FileFormatError(
            f"{where}: checkpoint {path!r} is not a readable state dict: it holds pickled Python objects other than "
            "tensors, which shrink refuses to load (unpickling can run arbitrary code); save model.state_dict()"
        ) from None
    except Exception as exc:  # truncated file or foreign format
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise FileFormatError(
            f"{where}: checkpoint {path!r} is not a readable state dict (torch.save or safetensors file expected): "
            f"{type(exc).__name__}: {first_line}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FileFormatError(f"{where}: checkpoint {path!r} is not a state dict (a mapping of names to tensors)")
    mismatch = state_mismatch(model.state_dict(), state)
    if mismatch:
        raise ModelError(f"{where}: checkpoint {path!r} does not match the model: {mismatch}")
    model.load_state_dict(state)


def check_kwargs(factory: Callable[..., Any] | None, kwargs: dict[str, Any], where: str) -> None:
    """Raise ConfigError at ``where`` when ``factory`` cannot take ``kwargs`` (a misspelt or missing name), before
    anything is built; a callable without a readable signature is not checked."""
    try:
        signature = inspect.signature(factory) if factory is not None else None
    except (TypeError, ValueError):
        return
    if signature is None:
        return
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        name = getattr(factory, "__name__", type(factory).__name__)
        accepted = [p for p in signature.parameters if p not in ("self", "args", "kwargs")]
        raise ConfigError(f"{where}: {name}(): {exc} (it takes: {', '.join(accepted) or 'nothing'})") from None


def _with_progress(factory: Callable[..., Any], kwargs: dict[str, Any], progress: bool) -> dict[str, Any]:
    """``kwargs`` plus ``progress=`` when the factory takes it and the recipe does not set it (so ``--quiet`` also
    silences a zoo teacher's training bar)."""
    try:
        takes = "progress" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        takes = False
    return {"progress": progress, **kwargs} if takes else dict(kwargs)


def build_model(spec: ModelSpec, where: str, progress: bool = True, folder: Path | None = None) -> nn.Module:
    """The model of ``spec``: its factory imported and called (with ``folder``, the recipe's, and the current
    directory on ``sys.path``), its checkpoint (relative to ``folder``) loaded, in eval mode."""
    from shrink.zoo import MODELS

    if spec.zoo is not None:
        if spec.zoo not in MODELS:
            raise ConfigError(f"{where}: unknown zoo model {spec.zoo!r} (known: {', '.join(MODELS)})")
        factory = MODELS[spec.zoo]
    else:
        factory = import_factory(spec.factory or "", where, folder)
    with user_import_paths(folder if spec.factory is not None else None):
        model = factory(**_with_progress(factory, spec.kwargs, progress))
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{where}: the model factory returned {type(model).__name__}, not a torch.nn.Module")
    if spec.checkpoint:
        _load_checkpoint(model, spec.checkpoint, where, folder)
    check_model_finite(model, where)
    return model.eval()


def build_data(spec: DataSpec, where: str, folder: Path | None = None) -> DataBundle:
    """The data of ``spec`` (a factory is imported and called as in :func:`build_model`)."""
    from shrink.zoo import DATA

    if spec.zoo is not None:
        if spec.zoo not in DATA:
            raise ConfigError(f"{where}: unknown zoo data {spec.zoo!r} (known: {', '.join(DATA)})")
        data = DATA[spec.zoo](**spec.kwargs)
    else:
        factory = import_factory(spec.factory or "", where, folder)
        with user_import_paths(folder):
            data = factory(**spec.kwargs)
    if not isinstance(data, DataBundle):
        raise ConfigError(f"{where}: the data factory returned {type(data).__name__}, not a shrink.data.DataBundle")
    return data
