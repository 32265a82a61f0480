"""Smaller students initialised from the teacher: keep a subset of a layer stack (e.g. a 3-layer MiniLM made of
every other layer of the 6-layer one, as in DistilBERT's initialisation)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn

from shrink.errors import ConfigError, ModelError

__all__ = ["find_layer_stack", "student_from_layers"]


def find_layer_stack(model: nn.Module) -> str:
    """Name of the model's repeated block stack: the largest ``nn.ModuleList`` whose name ends in ``layer`` or
    ``layers`` (``encoder.encoder.layer`` for shrink's MiniLM)."""
    candidates = [
        (len(m), name)
        for name, m in model.named_modules()
        if isinstance(m, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layer", "layers", "blocks", "h")
    ]
    if not candidates:
        raise ModelError(
            f"{type(model).__name__}: no layer stack (a ModuleList named layer/layers/blocks/h) found; "
            "name it with layers_path"
        )
    return max(candidates)[1]


def student_from_layers(teacher: nn.Module, keep: Sequence[int], layers_path: str = "auto") -> nn.Module:
    """A deep copy of ``teacher`` that keeps only the blocks ``keep`` (indices, in order) of its layer stack.

    Hugging Face configs found on the way (``num_hidden_layers``) are updated so the student saves and reloads.
    """
    student = copy.deepcopy(teacher)
    path = find_layer_stack(student) if layers_path == "auto" else layers_path
    try:
        stack = student.get_submodule(path)
    except AttributeError:
        raise ConfigError(f"layers_path: no module named {path!r} in {type(teacher).__name__}") from None
    if not isinstance(stack, nn.ModuleList):
        raise ConfigError(f"layers_path: {path!r} is a {type(stack).__name__}, not an nn.ModuleList")
    keep = list(keep)
    if not keep or len(set(keep)) != len(keep) or any(not 0 <= i < len(stack) for i in keep):
        raise ConfigError(f"keep_layers: {keep} must be distinct indices into the {len(stack)} layers of {path!r}")
    kept = nn.ModuleList([stack[i] for i in keep])
    parent_name, _, child = path.rpartition(".")
    parent = student.get_submodule(parent_name) if parent_name else student
    setattr(parent, child, kept)
    for i, layer in enumerate(kept):  # HF attention modules index their KV cache by layer_idx
        for m in layer.modules():
            if hasattr(m, "layer_idx"):
                setattr(m, "layer_idx", i)  # noqa: B010
    for m in student.modules():
        config = getattr(m, "config", None)
        if config is not None and hasattr(config, "num_hidden_layers"):
            config.num_hidden_layers = len(keep)  # the copy's own config object
    return student
