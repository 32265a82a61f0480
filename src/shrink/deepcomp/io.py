"""Save and load a weight-shared model as a Deep Compression file (see :mod:`shrink.deepcomp.container`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from shrink._atomic import atomic_write_bytes
from shrink._parametrize import baked_copy
from shrink.deepcomp.container import TensorStats, decode_state, encode_state
from shrink.errors import FileFormatError, ModelError

__all__ = ["shared_tensors", "save_compressed", "read_compressed", "load_compressed"]

#: most a reader will load into memory; a larger file is refused before it is read
MAX_FILE_BYTES = 1 << 32


def shared_tensors(
    model: nn.Module, conv_gap_bits: int = 8, linear_gap_bits: int = 5, max_clusters: int = 256
) -> dict[str, int]:
    """State names of the weights to store weight-shared (Linear / Conv weights with at most ``max_clusters``
    distinct non-zero values) → their relative-index gap bits (paper: 8 for conv, 5 for fully connected)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            w = module.weight.detach()
            if w.dtype == torch.float32 and len(torch.unique(w[w != 0])) <= max_clusters:
                out[f"{name}.weight" if name else "weight"] = (
                    linear_gap_bits if isinstance(module, nn.Linear) else conv_gap_bits
                )
    return out


def save_compressed(
    model: nn.Module, path: str | os.PathLike[str], *, conv_gap_bits: int = 8, linear_gap_bits: int = 5
) -> list[TensorStats]:
    """Write ``model`` (masks and clustering baked in) as a Deep Compression file; returns per-tensor stats."""
    model = baked_copy(model)
    shared = shared_tensors(model, conv_gap_bits, linear_gap_bits)
    if not shared:
        raise ModelError("save_compressed: no weight-shared Linear/Conv layer (run deep compression first)")
    data, stats = encode_state(model.state_dict(), shared)
    atomic_write_bytes(path, data)
    return stats


def read_compressed(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors stored in a Deep Compression file (raises FileFormatError on any malformed file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Deep Compression file at {path}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise FileFormatError(f"{path}: {size} bytes is larger than any Deep Compression file this reader accepts")
    return decode_state(path.read_bytes(), where=str(path))


def load_compressed(path: str | os.PathLike[str], factory: Callable[[], nn.Module]) -> nn.Module:
    """Rebuild a runnable model: ``factory()`` builds the architecture, the file's decoded weights fill it."""
    state = read_compressed(path)
    model = factory()
    expected = model.state_dict()
    for key, value in state.items():
        if key in expected and tuple(expected[key].shape) != tuple(value.shape):
            raise ModelError(
                f"{path}: {key} has shape {tuple(value.shape)}, the model expects {tuple(expected[key].shape)}"
            )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: weights do not match the architecture: {exc}") from None
    return model.eval()
