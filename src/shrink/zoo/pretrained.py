"""Trained zoo weights: shipped with the package, else cached by content, else trained once.

A model's weights are named by a *key*: a hash of everything that decides them (the model's name and parameter
shapes, the training settings, the seed and the format version). Lookup order for a key:

1. ``shrink/zoo/weights/NAME-KEY.safetensors`` shipped in the package (the default seed of every trained zoo model),
   checked against the SHA-256 in ``weights/manifest.json``;
2. ``$SHRINK_CACHE/zoo/NAME-KEY.safetensors``, whose metadata must carry the same key;
3. otherwise train it. Training runs on one thread (the weights do not depend on the caller's thread count) under a
   file lock (two processes racing train once; the second reads the first's file), and the file is written
   atomically (a reader never sees half a file).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shrink._cache import cache_dir

__all__ = ["weights_key", "shipped_path", "load_or_train", "train_to_bytes", "single_thread", "file_sha256"]

#: bump when training code changes in a way that changes the weights
FORMAT_VERSION = 1


def weights_key(name: str, model: nn.Module, settings: dict[str, Any]) -> str:
    """16 hex digits naming the weights ``model`` gets when trained with ``settings``."""
    spec = {
        "name": name,
        "version": FORMAT_VERSION,
        "shapes": {k: list(v.shape) for k, v in model.state_dict().items()},
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _weights_dir() -> Path:
    return Path(str(resources.files("shrink.zoo").joinpath("weights")))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shipped_path(name: str, key: str) -> Path | None:
    """The shipped weights file for ``name``/``key``, or None; a file whose hash disagrees with the manifest is an
    error (a damaged install must not silently give other weights)."""
    path = _weights_dir() / f"{name}-{key}.safetensors"
    if not path.is_file():
        return None
    manifest = json.loads((_weights_dir() / "manifest.json").read_text(encoding="utf-8"))
    expected = manifest.get(path.name, {}).get("sha256")
    if expected != file_sha256(path):
        raise RuntimeError(f"{path}: shipped zoo weights are damaged (SHA-256 differs from weights/manifest.json)")
    return path


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the body on one intra-op thread (reductions then add in one order), restoring the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: atomic writes still keep readers safe, a race may train twice
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read(path: Path, model: nn.Module, key: str | None) -> bool:
    """Load ``path`` into ``model``; False when it is unreadable or (for a cache file) carries another key."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        if key is not None:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("key") != key:
                    return False
        model.load_state_dict(load_file(str(path)))
    except Exception as exc:  # a truncated or foreign file in the cache: train again and overwrite it
        warnings.warn(f"{path}: unreadable cached zoo weights ({type(exc).__name__}); training again", stacklevel=3)
        return False
    return True


def load_or_train(
    name: str, model: nn.Module, settings: dict[str, Any], train: Callable[[nn.Module], Any]
) -> nn.Module:
    """``model`` with the weights named by (name, model, settings): shipped, cached, or trained now by ``train``."""
    from shrink._atomic import atomic_write_bytes

    key = weights_key(name, model, settings)
    shipped = shipped_path(name, key)
    if shipped is not None and _read(shipped, model, None):
        return model.eval()
    path = cache_dir("zoo") / f"{name}-{key}.safetensors"
    if path.is_file() and _read(path, model, key):
        return model.eval()
    with _file_lock(path.with_name(path.name + ".lock")):
        if path.is_file() and _read(path, model, key):  # another process trained it while we waited
            return model.eval()
        atomic_write_bytes(path, train_to_bytes(name, model, settings, train))
    return model.eval()


def train_to_bytes(name: str, model: nn.Module, settings: dict[str, Any], train: Callable[[nn.Module], Any]) -> bytes:
    """Train ``model`` in place on one thread; its weights as a safetensors file (tagged with name and key)."""
    from safetensors.torch import save

    key = weights_key(name, model, settings)
    with single_thread():
        train(model)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    # one metadata entry only: safetensors writes a metadata map in a random order (the bytes would differ)
    return save(state, metadata={"key": key})
