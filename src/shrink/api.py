"""The public verbs. Each takes a model and one config, works on a copy (unless ``inplace=True``) and returns the
result; a failing step leaves the user's model exactly as it was.

Algorithms plug in with :func:`implements`: one function per config class, ``fn(model, config, ctx) -> model``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from shrink.config import Config
from shrink.data import check_model_finite, check_not_meta
from shrink.errors import ConfigError
from shrink.hf_save import guard_save_pretrained, weight_layout

__all__ = [
    "Context",
    "implements",
    "apply",
    "prune",
    "quantize",
    "distill",
    "decompose",
    "deep_compress",
    "finetune",
    "search",
]

Handler = Callable[[nn.Module, Any, "Context"], nn.Module]
_HANDLERS: dict[type[Config], Handler] = {}


@dataclass
class Context:
    """Everything besides the model and its config that an algorithm may need."""

    example_inputs: Any = None
    train: Iterable[Any] | None = None
    calibration: Iterable[Any] | None = None
    val: Iterable[Any] | None = None
    teacher: nn.Module | None = None
    metric: str = "accuracy"
    checkpoint_dir: str | os.PathLike[str] | None = None
    progress: bool = True
    #: where a recipe writes its outputs (exported files); None outside recipes
    out_dir: str | os.PathLike[str] | None = None
    #: notes for the report: skipped layers, fallbacks, what is simulated
    notes: list[str] = field(default_factory=list)
    #: extra models a stage produces for the report (e.g. the ONNX Runtime session of an export stage)
    extra_models: dict[str, Any] = field(default_factory=dict)


def implements(config_cls: type[Config]) -> Callable[[Handler], Handler]:
    """Register ``fn(model, config, ctx) -> model`` as the algorithm behind ``config_cls``."""

    def deco(fn: Handler) -> Handler:
        _HANDLERS[config_cls] = fn
        return fn

    return deco


def apply(model: nn.Module, config: Config, ctx: Context | None = None, *, inplace: bool = False) -> nn.Module:
    """Run the algorithm behind ``config`` on ``model`` (a deep copy unless ``inplace``). When the stage changed the
    model's weights (names or shapes), ``save_pretrained`` of transformers models inside the result raises
    (:mod:`shrink.hf_save`): ``from_pretrained`` would load such a file with random weights."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, Config):
        raise TypeError(f"config must be a shrink config object, got {type(config).__name__}")
    handler = _HANDLERS.get(type(config))
    if handler is None:
        raise ConfigError(f"no implementation registered for config {type(config).__name__}")
    where = f"{config.type_name or type(config).__name__}: model"
    check_not_meta(model, where)
    check_model_finite(model, where=where)
    before = weight_layout(model)
    work = model if inplace else copy.deepcopy(model)
    out = handler(work, config, ctx or Context())
    guard_save_pretrained(out, before)
    return out


def _verb(family: str, model: nn.Module, config: Config | Sequence[Config], inplace: bool, **ctx: Any) -> nn.Module:
    """Apply ``config``, or each config of a list in order (one context: notes accumulate), to ``model``."""
    chain: list[Config] = list(config) if isinstance(config, (list, tuple)) else [config]  # type: ignore[list-item]
    if not chain:
        raise ConfigError(f"shrink.{_VERB_OF[family]}(): the list of configs is empty")
    for c in chain:
        if isinstance(c, Config) and c.family != family:
            raise ConfigError(f"{type(c).__name__} is a {c.family!r} config; use shrink.{_VERB_OF[c.family]}()")
    context = Context(**ctx)
    out = apply(model, chain[0], context, inplace=inplace)
    for c in chain[1:]:
        out = apply(out, c, context, inplace=True)  # the first step already made the copy
    return out


_VERB_OF = {
    "prune": "prune",
    "quantize": "quantize",
    "distill": "distill",
    "decompose": "decompose",
    "deep_compress": "deep_compress",
    "train": "finetune",
    "search": "search",
    "export": "export",
}


def prune(model: nn.Module, config: Config | Sequence[Config], *, inplace: bool = False, **ctx: Any) -> nn.Module:
    """Prune ``model`` with a pruning config (``example_inputs``, ``train`` as the algorithm needs)."""
    return _verb("prune", model, config, inplace, **ctx)


def quantize(model: nn.Module, config: Config | Sequence[Config], *, inplace: bool = False, **ctx: Any) -> nn.Module:
    """Quantize ``model`` with a quantization config (``calibration``, ``example_inputs``, ``train``...)."""
    return _verb("quantize", model, config, inplace, **ctx)


def distill(student: nn.Module, teacher: nn.Module, config: Config, *, inplace: bool = False, **ctx: Any) -> nn.Module:
    """Train ``student`` to imitate ``teacher`` (frozen) with a distillation config."""
    return _verb("distill", student, config, inplace, teacher=teacher, **ctx)


def decompose(model: nn.Module, config: Config | Sequence[Config], *, inplace: bool = False, **ctx: Any) -> nn.Module:
    """Replace layers by low-rank factorizations (SVD, Tucker, CP)."""
    return _verb("decompose", model, config, inplace, **ctx)


def deep_compress(
    model: nn.Module, config: Config | Sequence[Config], *, inplace: bool = False, **ctx: Any
) -> nn.Module:
    """Deep Compression: prune, share weights by k-means, fine-tune the centroids."""
    return _verb("deep_compress", model, config, inplace, **ctx)


def finetune(model: nn.Module, config: Config | Sequence[Config], *, inplace: bool = False, **ctx: Any) -> nn.Module:
    """Supervised fine-tuning (``train`` data required)."""
    return _verb("train", model, config, inplace, **ctx)


def search(model: nn.Module, config: Config | Sequence[Config], *, inplace: bool = False, **ctx: Any) -> nn.Module:
    """Sensitivity-driven mixed precision or hardware-aware compression search (``shrink.autosearch`` configs)."""
    return _verb("search", model, config, inplace, **ctx)
