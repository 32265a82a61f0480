"""Resuming a recipe run: refuse checkpoints that another recipe wrote.

A run records its recipe's fingerprint (model, data, seed and every stage's config) next to its checkpoints. A
``--resume`` with a changed recipe would silently mix two runs' weights, so it is an error naming what changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shrink._atomic import atomic_write_bytes
from shrink.errors import ConfigError, FileFormatError

__all__ = ["check_resumable"]


def check_resumable(mine: dict[str, Any], checkpoints: Path, where: str) -> None:
    """Refuse to resume from checkpoints written by another recipe; record this recipe for later resumes."""
    path = checkpoints / "recipe.json"
    if path.is_file():
        try:
            theirs = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise FileFormatError(f"{path}: unreadable resume record ({exc}); run without --resume") from None
        if theirs != mine:
            raise ConfigError(
                f"{where}: cannot resume: the checkpoints in {checkpoints} were written by a different "
                f"recipe ({_first_difference(theirs, mine)}); run without --resume to start over"
            )
    atomic_write_bytes(path, json.dumps(mine, indent=1, sort_keys=True).encode())


def _first_difference(theirs: Any, mine: Any) -> str:
    if not isinstance(theirs, dict):
        return "unreadable record"
    for key in ("model", "data", "seed"):
        if theirs.get(key) != mine[key]:
            return f"'{key}' changed"
    old, new = theirs.get("stages") or [], mine["stages"]
    for i in range(max(len(old), len(new))):
        if i >= len(old) or i >= len(new) or old[i] != new[i]:
            return f"stage {i + 1} changed"
    return "unknown change"
