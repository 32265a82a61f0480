"""``TeacherEnsemble``: several trained classifiers as one distillation teacher.

Its output is the log of the members' mean class probabilities, so at temperature 1 the student's soft targets are
exactly the ensemble's averaged prediction (the "generalist" teacher of Hinton et al., 2015; at another temperature
the mean is sharpened or flattened like any teacher's). An ensemble usually predicts better than each member, and a
student distilled from it can recover more of what compression took away. It is a teacher for logits
(``KnowledgeDistillation``, the pruning configs' ``distill_alpha``), not for embedding distillation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shrink.errors import ConfigError, DataError

__all__ = ["TeacherEnsemble"]


class TeacherEnsemble(nn.Module):
    """``members`` (≥ 2 trained classifiers over the same classes) answering as one: ``log(mean(softmax(logits)))``.

    The members are used as they are (same objects, not copied or frozen here: distillation runs its teacher in eval
    mode under ``torch.no_grad``); pass ``shrink.distill(student, TeacherEnsemble([...]), ...)`` or
    ``shrink.prune(model, config, teacher=TeacherEnsemble([...]))``. A member may return a tensor or an output with
    ``.logits``.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise ConfigError(f"TeacherEnsemble: needs at least 2 members, got {len(members)}")
        for i, member in enumerate(members):
            if not isinstance(member, nn.Module):
                raise ConfigError(f"TeacherEnsemble: member {i} is a {type(member).__name__}, not an nn.Module")
        self.members = nn.ModuleList(members)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        log_probs: list[torch.Tensor] = []
        for i, member in enumerate(self.members):
            logits = _logits(member(*args, **kwargs), i)
            if log_probs and logits.shape != log_probs[0].shape:
                raise DataError(
                    f"TeacherEnsemble: member {i} returned logits of shape {tuple(logits.shape)}, member 0 "
                    f"{tuple(log_probs[0].shape)}: the members must classify the same inputs into the same classes"
                )
            log_probs.append(torch.log_softmax(logits.float(), dim=-1))
        return torch.logsumexp(torch.stack(log_probs), dim=0) - math.log(len(log_probs))


def _logits(output: Any, index: int) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise DataError(
        f"TeacherEnsemble: member {index} returned a {type(output).__name__}; a member must return class logits "
        "(a tensor or an output with .logits)"
    )
