"""Where the bytes of a shrink model file go, read back from the written file: each tensor's data (packed codes,
sparse masks and values included) and the header (safetensors' 8-byte length and JSON header, which holds shrink's
manifest). Byte budgets are checked against these figures, not against estimates."""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from shrink.errors import FileFormatError
from shrink.export.artifact import save

__all__ = ["FileSize", "file_size", "artifact_size"]


@dataclass(frozen=True)
class FileSize:
    """``total`` bytes of a model file; ``tensors`` maps each state-dict key to the bytes its data takes (an alias of
    another tensor takes none); the rest is :attr:`header`."""

    total: int
    tensors: dict[str, int]

    @property
    def header(self) -> int:
        """Bytes outside any tensor: safetensors' length field and JSON header, with shrink's manifest in it."""
        return self.total - sum(self.tensors.values())

    def of_modules(self, names: Iterable[str]) -> int:
        """Bytes of the tensors of the named modules (their children included)."""
        prefixes = tuple(f"{n}." for n in names)
        return sum(b for key, b in self.tensors.items() if key.startswith(prefixes)) if prefixes else 0


def file_size(path: str | os.PathLike[str]) -> FileSize:
    """The :class:`FileSize` of the model file at ``path``, from its safetensors header."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        tensors: dict[str, int] = {}
        for name, entry in header.items():
            if name != "__metadata__":
                start, end = entry["data_offsets"]
                key = name.partition("@")[0]  # KEY@codes, KEY@mask, KEY@values belong to KEY
                tensors[key] = tensors.get(key, 0) + int(end) - int(start)
    except (OSError, struct.error, ValueError, KeyError, TypeError) as exc:
        raise FileFormatError(f"{path}: not a readable safetensors file ({exc})") from None
    return FileSize(os.path.getsize(path), tensors)


def artifact_size(model: nn.Module, tmp_dir: str | os.PathLike[str] | None = None) -> FileSize:
    """The :class:`FileSize` of the file :func:`shrink.save` writes for ``model`` (really written, then read)."""
    with tempfile.TemporaryDirectory(dir=tmp_dir) as d:
        return file_size(save(model, Path(d) / "model.shrink"))
