"""What the ``shrink`` command prints while it works: one line per stage, progress bars only on a terminal.

On a terminal, training and evaluation show progress bars and each stage ends with one line
``stage 3/11 name … took 1.2 s``. In a log file or a pipe there are no bars (their carriage returns clutter a file):
each stage prints a plain line when it starts and one when it ends.
"""

from __future__ import annotations

import shutil
import sys
from typing import TextIO

__all__ = ["StageLines", "is_terminal", "table_width"]


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes and closed streams)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def table_width(stream: TextIO | None = None) -> int | None:
    """The terminal's width in columns when ``stream`` (default stdout) is a terminal; None for a file or a pipe
    (the table then uses its plain layout)."""
    stream = stream or sys.stdout
    return shutil.get_terminal_size((100, 24)).columns if is_terminal(stream) else None


class StageLines:
    """``on_stage`` callback for :func:`shrink.recipe.run` that prints the stage lines to ``stream``."""

    def __init__(self, stream: TextIO | None = None, *, terminal: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.terminal = is_terminal(self.stream) if terminal is None else terminal

    def __call__(self, number: int, total: int, label: str, seconds: float | None) -> None:
        head = f"stage {number}/{total} {label}"
        if seconds is None:
            if not self.terminal:  # on a terminal the progress bars show that it is working
                print(f"{head} …", file=self.stream, flush=True)
            return
        took = f"{seconds:.1f} s" if seconds < 600 else f"{seconds / 60:.1f} min"
        print(f"{head} … took {took}" if self.terminal else f"{head} took {took}", file=self.stream, flush=True)
