"""General English sentences read from the docstrings of Python's standard library on this machine (never
downloaded, never shipped with shrink): extra calibration text for the text models, apart from every split that is
scored."""

from __future__ import annotations

import ast
import functools
import random
import re
import sysconfig
from pathlib import Path

from shrink.errors import DataError

__all__ = ["DOCSTRING_MODULES", "stdlib_sentences"]

#: standard-library modules whose docstrings are read, in this order (paths under the stdlib, without ``.py``)
DOCSTRING_MODULES = (
    "argparse", "logging/__init__", "collections/__init__", "functools", "pathlib", "subprocess", "typing",
    "inspect", "datetime", "decimal", "random", "statistics", "json/__init__", "csv", "zipfile", "tarfile",
    "email/message", "http/client", "urllib/parse", "threading", "asyncio/tasks", "unittest/case", "difflib",
    "pprint", "string", "dataclasses", "enum", "contextlib", "shutil", "tempfile",
)  # fmt: skip
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
MIN_CHARS, MAX_CHARS = 40, 300


def _docstrings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return [doc for node in ast.walk(tree) if isinstance(node, kinds) and (doc := ast.get_docstring(node))]


def _is_prose(sentence: str) -> bool:
    """A sentence of words: long enough, not too long, and letters or spaces for 85% of its characters (code
    examples, tables and option lists fail)."""
    words = sum(c.isalpha() or c == " " for c in sentence)
    return MIN_CHARS <= len(sentence) <= MAX_CHARS and words > 0.85 * len(sentence)


@functools.cache
def _prose_sentences() -> tuple[str, ...]:
    """Every prose sentence of the docstrings, sorted (parsed once per process: ~0.8 s)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found: set[str] = set()
    for name in DOCSTRING_MODULES:
        path = root / f"{name}.py"
        if not path.is_file():
            raise DataError(f"stdlib_sentences: {path} is missing (Python's standard library source)")
        for doc in _docstrings(path):
            found.update(s.strip() for s in _SENTENCE_END.split(" ".join(doc.split())))
    return tuple(sorted(s for s in found if _is_prose(s)))


def stdlib_sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct prose sentences from the docstrings of :data:`DOCSTRING_MODULES`, in a shuffled order fixed
    by ``seed`` (the same on every machine with the same Python version)."""
    sentences = list(_prose_sentences())
    if count > len(sentences):
        raise DataError(f"stdlib_sentences: {count} sentences asked, the docstrings hold {len(sentences)}")
    random.Random(seed).shuffle(sentences)
    return sentences[:count]
