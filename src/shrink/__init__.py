"""shrink: make trained PyTorch models smaller, faster and cheaper to run — and prove it.

Public verbs: ``prune``, ``quantize``, ``distill``, ``decompose``, ``deep_compress``, ``finetune``, ``search``,
``evaluate``, ``run``; ``save`` / ``load`` for shrink's model file. Verbs live on ``shrink``; the algorithm is chosen
by a config object from a family package, which is named as a noun: ``shrink.pruning``, ``shrink.quant``,
``shrink.distillation``, ``shrink.lowrank``, ``shrink.deepcomp``, ``shrink.autosearch``.
"""

from shrink import export
from shrink.api import Context, decompose, deep_compress, distill, finetune, prune, quantize, search
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
    "search",
    "finetune",
    "evaluate",
    "run",
    "save",
    "load",
    "export",
    "Context",
    "__version__",
]
