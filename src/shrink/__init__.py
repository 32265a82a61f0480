"""shrink: make trained PyTorch models smaller, faster and cheaper to run — and prove it.

Public verbs: ``prune``, ``quantize``, ``distill``, ``decompose``, ``deep_compress``, ``finetune``, ``search``,
``evaluate``, ``run``; ``save`` / ``load`` for shrink's model file. Verbs live on ``shrink``; the algorithm is chosen
by a config object from a family package, which is named as a noun: ``shrink.pruning``, ``shrink.quant``,
``shrink.distillation``, ``shrink.lowrank``, ``shrink.deepcomp``, ``shrink.autosearch``. ``shrink.presets`` holds the
stage lists that won their benchmark, by name.
"""

from typing import Any

from shrink import export
from shrink.api import Context, decompose, deep_compress, distill, finetune, prune, quantize, search
from shrink.eval.harness import evaluate
from shrink.export.artifact import load, save
from shrink.recipe import run

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``shrink.presets`` on first use (it imports the quantization family, which ``import shrink`` does not)."""
    if name == "presets":
        import importlib

        return importlib.import_module("shrink.presets")
    raise AttributeError(f"module 'shrink' has no attribute {name!r}")


__all__ = [
    "prune",
    "quantize",
    "distill",
    "decompose",
    "deep_compress",
    "search",
    "finetune",
    "evaluate",
    "run",
    "save",
    "load",
    "export",
    "presets",
    "Context",
    "__version__",
]
