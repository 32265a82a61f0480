"""Knowledge distillation: soft targets with T² scaling (Hinton et al.), FitNets hints, attention transfer and
embedding distillation, trained by the shared loop :func:`shrink.train.fit`.

``shrink.distillation.losses`` holds the plain loss functions (``kd_loss`` ...) that QAT and other loops can call;
:class:`DistillLoss` is a ``loss_fn`` for ``shrink.train.fit``.
"""

from shrink.distillation import losses
from shrink.distillation.ensemble import TeacherEnsemble
from shrink.distillation.hints import FeatureTaps, Hint
from shrink.distillation.losses import (
    attention_kl_loss,
    attention_map_loss,
    embedding_loss,
    hint_loss,
    hinton_loss,
    kd_loss,
)
from shrink.distillation.objective import DistillLoss, DistillTrainee, logits_of
from shrink.distillation.stage import EmbeddingDistillation, KnowledgeDistillation
from shrink.distillation.student import find_layer_stack, student_from_layers

__all__ = [
    "losses",
    "kd_loss",
    "hinton_loss",
    "hint_loss",
    "attention_map_loss",
    "attention_kl_loss",
    "embedding_loss",
    "Hint",
    "FeatureTaps",
    "DistillLoss",
    "DistillTrainee",
    "TeacherEnsemble",
    "logits_of",
    "KnowledgeDistillation",
    "EmbeddingDistillation",
    "find_layer_stack",
    "student_from_layers",
]
