"""Where shrink caches trained zoo models and measured tables: $SHRINK_CACHE or the user's cache dir."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(*parts: str) -> Path:
    root = os.environ.get("SHRINK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "shrink"
    )
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
