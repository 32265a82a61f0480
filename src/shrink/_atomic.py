"""Files written whole or not at all: a temporary file beside the target, flushed, then renamed over it.

The bottom of the house: used by every room that writes a file (model files, reports, caches, tables); imports
nothing from shrink.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["atomic_write_bytes", "remove_stale_temp_files"]


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:  # another user's live process
        return True
    except (ProcessLookupError, OverflowError):
        return False
    return True


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Delete the ``.NAME.PID.tmp`` files that writes of ``path`` killed mid-way left behind (their process is
    gone); a live process's temporary file is left alone. Returns what was removed."""
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 : -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:  # already removed by a concurrent writer, or not ours to remove
                pass
    return removed


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers never see half a file. Temporary
    files of earlier writes of ``path`` that were killed before their rename are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
