"""``DistillLoss``: the teacher-student training objective as a ``loss_fn(model, inputs, target)`` for
:func:`shrink.train.fit` — so distillation, QAT with an fp32 teacher and pruning recovery share one training loop.

The teacher is frozen: kept out of the module tree (never trained, never checkpointed), run in eval mode and
under ``torch.no_grad``. FitNets projections are submodules of the loss, so train them by passing
``params=[*student.parameters(), *loss.parameters()]`` (or train a :class:`DistillTrainee`, which also
checkpoints them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from shrink.data import call_model, logits_of
from shrink.distillation.hints import FeatureTaps, Hint, make_projection, pick_output
from shrink.distillation.losses import attention_kl_loss, attention_map_loss, embedding_loss, hint_loss, hinton_loss
from shrink.errors import ConfigError

__all__ = ["DistillLoss", "DistillTrainee", "logits_of"]


class DistillLoss(nn.Module):
    """``loss(student, inputs, target)``: soft targets (or embeddings) plus weighted hint losses.

    ``objective="logits"``: ``alpha · T² KL + (1 - alpha) · CE`` (Hinton); ``"embedding"``: cosine/MSE between the
    outputs. Hints with ``kind="fitnet"`` need ``student`` and ``example_inputs`` to size their projections.
    """

    def __init__(
        self,
        teacher: nn.Module,
        *,
        temperature: float = 4.0,
        alpha: float = 0.9,
        objective: Literal["logits", "embedding"] = "logits",
        embedding: Literal["cosine", "mse"] = "cosine",
        hints: Sequence[Hint] = (),
        student: nn.Module | None = None,
        example_inputs: Any = None,
    ) -> None:
        super().__init__()
        if objective not in ("logits", "embedding"):
            raise ConfigError(f"DistillLoss: objective must be 'logits' or 'embedding', got {objective!r}")
        self.teacher: nn.Module
        object.__setattr__(self, "teacher", teacher.eval())  # not a submodule: never trained or saved
        self.temperature, self.alpha, self.objective, self.embedding = temperature, alpha, objective, embedding
        self.hints = tuple(hints)
        self.projections = nn.ModuleDict()
        self._teacher_taps = (
            FeatureTaps(teacher, [h.teacher for h in self.hints], "distill hint (teacher)") if self.hints else None
        )
        self._student_taps: FeatureTaps | None = None
        self._student_id: int | None = None
        if any(h.kind == "fitnet" for h in self.hints):
            if student is None or example_inputs is None:
                raise ConfigError("DistillLoss: fitnet hints need student= and example_inputs= to size projections")
            self._build_projections(student, example_inputs)

    def _attach(self, student: nn.Module) -> FeatureTaps:
        if self._student_taps is None or self._student_id != id(student):
            if self._student_taps is not None:
                self._student_taps.close()
            self._student_taps = FeatureTaps(student, [h.student for h in self.hints], "distill hint (student)")
            self._student_id = id(student)
        return self._student_taps

    def _build_projections(self, student: nn.Module, example_inputs: Any) -> None:
        taps = self._attach(student)
        was_training = student.training
        with torch.no_grad():
            student.eval()
            call_model(student, example_inputs)
            call_model(self.teacher, example_inputs)
        student.train(was_training)
        assert self._teacher_taps is not None
        for i, h in enumerate(self.hints):
            if h.kind == "fitnet":
                s = pick_output(taps.take(h.student), h.kind, h.student)
                t = pick_output(self._teacher_taps.take(h.teacher), h.kind, h.teacher)
                self.projections[str(i)] = make_projection(s, t, f"hint {h.student} -> {h.teacher}")
        taps.clear()
        self._teacher_taps.clear()

    def forward(self, student: nn.Module, inputs: Any, target: Any = None) -> torch.Tensor:
        taps = self._attach(student) if self.hints else None
        self.teacher.eval()
        with torch.no_grad():
            teacher_out = logits_of(call_model(self.teacher, inputs))
        student_out = logits_of(call_model(student, inputs))
        if self.objective == "logits":
            loss = hinton_loss(student_out, teacher_out, target, self.temperature, self.alpha)
        else:
            loss = embedding_loss(student_out, teacher_out, self.embedding)
        if taps is not None and self._teacher_taps is not None:
            mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
            for i, h in enumerate(self.hints):
                s = pick_output(taps.take(h.student), h.kind, h.student)
                t = pick_output(self._teacher_taps.take(h.teacher), h.kind, h.teacher)
                if h.kind == "fitnet":
                    proj = self.projections[str(i)]
                    term = hint_loss(proj(s), t)
                elif h.kind == "attention_map":
                    term = attention_map_loss(s, t)
                else:
                    term = attention_kl_loss(s, t, mask)
                loss = loss + h.weight * term
            taps.clear()
            self._teacher_taps.clear()
        return loss

    def close(self) -> None:
        """Remove the forward hooks from student and teacher."""
        for taps in (self._student_taps, self._teacher_taps):
            if taps is not None:
                taps.close()
        self._student_taps = None


class DistillTrainee(nn.Module):
    """Student plus the loss's projections in one module, so ``fit`` trains and checkpoints both."""

    def __init__(self, student: nn.Module, loss: DistillLoss) -> None:
        super().__init__()
        self.student, self.distill = student, loss

    @staticmethod
    def loss_fn(trainee: nn.Module, inputs: Any, target: Any) -> torch.Tensor:
        assert isinstance(trainee, DistillTrainee)
        return trainee.distill(trainee.student, inputs, target)
