"""Training loops shared by fine-tuning, QAT and distillation: progress bars, per-epoch checkpoints, resume."""

from shrink.train.finetune import FineTune, finetune_handler
from shrink.train.loop import fit

__all__ = ["fit", "FineTune", "finetune_handler"]
