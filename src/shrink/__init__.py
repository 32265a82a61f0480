"""shrink: make trained PyTorch models smaller, faster and cheaper to run — and prove it.

Public verbs: ``prune``, ``quantize``, ``distill``, ``decompose``, ``deep_compress``, ``finetune``, ``evaluate``,
``run``; ``save`` / ``load`` for shrink's model file. Algorithms are chosen by config objects from the family
packages (``shrink.prune``, ``shrink.quant``, ...).
"""

from shrink import export
from shrink.api import Context, decompose, deep_compress, distill, finetune, prune, quantize
from shrink.eval.harness import evaluate
from shrink.export.artifact import load, save
from shrink.recipe import run

__version__ = "0.1.0"
__all__ = [
    "prune",
    "quantize",
    "distill",
    "decompose",
    "deep_compress",
    "finetune",
    "evaluate",
    "run",
    "save",
    "load",
    "export",
    "Context",
    "__version__",
]
