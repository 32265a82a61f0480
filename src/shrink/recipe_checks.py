"""Checks a recipe run makes before and after its stages: what data each stage needs (checked before the first stage
runs, so a missing calibration set is not found after an hour of fine-tuning), where user factories are imported
from, and whether the baseline's accuracy is at chance level (a forgotten checkpoint)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shrink.config import Config
from shrink.data import DataBundle, call_model
from shrink.errors import ConfigError
from shrink.eval.metrics import evaluation_mode, select_output
from shrink.report.table import Report

__all__ = ["stage_needs", "check_stage_needs", "user_import_paths", "chance_level_note", "CHANCE_FACTOR"]

#: a need is satisfied by any one of these bundle fields
Need = tuple[str, ...]


def _epochs(*fields: str) -> Callable[[Config], list[Need]]:
    return lambda cfg: [("train",)] if any(getattr(cfg, f, 0) for f in fields) else []


_CHANNEL_DATA = {"taylor", "lasso"}

#: stage type -> what it needs from the data, given its config; types not listed need nothing
_NEEDS: dict[str, Callable[[Config], list[Need]]] = {
    "finetune": lambda cfg: [("train",)],
    "distill": lambda cfg: [("train",), ("teacher",)],
    "embedding_distill": lambda cfg: [(str(getattr(cfg, "data", "train")),), ("teacher",)],
    "binarize": lambda cfg: [("train",)],
    "qat": lambda cfg: [("train",)],
    "int8_static": lambda cfg: [("calibration",)],
    "smooth_quant": lambda cfg: [("calibration",)],
    "awq": lambda cfg: [("calibration",)],
    "gptq": lambda cfg: [("calibration",)],
    "signround": lambda cfg: [("calibration",)],
    "nm_sparsity": _epochs("epochs"),
    "iterative_pruning": _epochs("epochs_per_cycle"),
    "gradual_pruning": _epochs("epochs"),
    "deep_compression": _epochs("prune_epochs", "cluster_epochs"),
    "channel_pruning": lambda cfg: (
        [("example_inputs",)]
        + ([("train", "calibration")] if getattr(cfg, "importance", None) in _CHANNEL_DATA else [])
    ),
    "layer_removal": lambda cfg: [("example_inputs",)],
    "onnx_export": lambda cfg: [("example_inputs",)],
    "zeroq": lambda cfg: [("example_inputs",)],
    "mixed_precision": lambda cfg: [("example_inputs",), ("calibration", "val", "train")],
    "search": lambda cfg: [("example_inputs",), ("val",)] + _epochs("finetune_epochs")(cfg),
}


def stage_needs(config: Config) -> list[Need]:
    """What the stage of ``config`` needs: a list of alternatives (``("train", "calibration")``: either will do)."""
    rule = _NEEDS.get(config.type_name or "")
    return rule(config) if rule is not None else []


def check_stage_needs(
    stages: Sequence[tuple[str, Config]], data: DataBundle, teacher: nn.Module | None, where: str
) -> None:
    """Raise ConfigError naming the first stage (its label) whose needs ``data`` / ``teacher`` do not meet."""
    have = {
        "train": data.train,
        "val": data.val,
        "calibration": data.calibration,
        "example_inputs": data.example_inputs,
        "teacher": teacher,
    }
    for label, cfg in stages:
        for need in stage_needs(cfg):
            if all(have.get(name) is None for name in need):
                absent = " and ".join(f"{name}=None" for name in need)
                raise ConfigError(
                    f"{where}: {label} needs {' or '.join(need)} data, but the data ({data.name}) has {absent}; "
                    "nothing was run (give the DataBundle that field, or drop the stage)"
                )


@contextmanager
def user_import_paths(folder: Path | None) -> Iterator[None]:
    """Put ``folder`` (the recipe's) and the current directory at the front of ``sys.path`` for the block only."""
    wanted = [str(p) for p in dict.fromkeys(p.resolve() for p in (folder, Path.cwd()) if p is not None)]
    added = [p for p in wanted if p not in sys.path]
    sys.path[:0] = added
    importlib.invalidate_caches()
    try:
        yield
    finally:
        for p in added:
            if p in sys.path:
                sys.path.remove(p)


#: a baseline whose accuracy is at most this multiple of chance (100 / classes percent) gets a note
CHANCE_FACTOR = 1.5


def chance_level_note(report: Report, model: nn.Module, example_inputs: Any, name: str = "baseline") -> str | None:
    """A warning for the report when ``name``'s accuracy is <= :data:`CHANCE_FACTOR` x chance (classes read from
    the width of the model's output on ``example_inputs``); None otherwise."""
    if report.metric != "accuracy":
        return None
    accuracy = next((r.metrics.get("accuracy") for r in report.rows if r.name == name), None)
    if accuracy is None:
        return None
    with evaluation_mode([model]), torch.inference_mode():
        classes = select_output(call_model(model, example_inputs)).shape[-1]
    if classes < 2 or accuracy > CHANCE_FACTOR * 100 / classes:
        return None
    return (
        f"warning: {name} accuracy {accuracy:.1f}% is at chance level for {classes} classes "
        f"(<= {CHANCE_FACTOR * 100 / classes:.1f}%): are the trained weights loaded (model: checkpoint)?"
    )
