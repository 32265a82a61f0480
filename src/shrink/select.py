"""Choose layers by fully-qualified name, ``re:`` regex or module type, minus ``ignore``.

A selector that matches nothing is an error, never a silent no-op.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import pydantic
from torch import nn

from shrink.data import check_model_finite
from shrink.errors import SelectorError
from shrink.library_layers import is_conv1d

__all__ = ["Selector", "select_modules"]

_TYPE_ALIASES: dict[str, tuple[type[nn.Module], ...]] = {
    "Linear": (nn.Linear,),
    "Conv1d": (nn.Conv1d,),
    "Conv2d": (nn.Conv2d,),
    "Conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d),
    "Embedding": (nn.Embedding,),
    "LSTM": (nn.LSTM,),
    "GRU": (nn.GRU,),
    "BatchNorm2d": (nn.BatchNorm2d,),
    "LayerNorm": (nn.LayerNorm,),
}


class Selector(pydantic.BaseModel):
    """Which layers an algorithm touches.

    ``include`` entries are exact module names (``"features.0"``), regexes (``"re:encoder\\.layer\\.\\d+\\.ffn"``)
    or type names (``"type:Linear"``). ``types`` restricts the result to these module types. ``ignore`` uses the
    same syntax and removes layers.
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    include: tuple[str, ...] = ("re:.*",)
    types: tuple[str, ...] = ("Linear", "Conv")
    ignore: tuple[str, ...] = ()


def _type_tuple(names: Sequence[str], where: str) -> tuple[type[nn.Module], ...]:
    out: list[type[nn.Module]] = []
    for n in names:
        if n not in _TYPE_ALIASES:
            raise SelectorError(f"{where}: unknown module type {n!r} (known: {', '.join(_TYPE_ALIASES)})")
        out.extend(_TYPE_ALIASES[n])
    return tuple(out)


def _matches(pattern: str, name: str, module: nn.Module, where: str) -> bool:
    if pattern.startswith("re:"):
        try:
            return re.fullmatch(pattern[3:], name) is not None
        except re.error as exc:
            raise SelectorError(f"{where}: bad regex {pattern!r}: {exc}") from None
    if pattern.startswith("type:"):
        return isinstance(module, _type_tuple([pattern[5:]], where))
    return name == pattern


def _layers_held(named: dict[str, nn.Module]) -> str:
    """What a selector that matched nothing could have chosen: the classes of the model's layers that hold weights,
    with their counts (and how to quantize transformers' Conv1D)."""
    held = Counter(type(m).__name__ for n, m in named.items() if n and next(m.parameters(False), None) is not None)
    if not held:
        return "; the model holds no layer with weights"
    listed = ", ".join(f"{cls} x{count}" for cls, count in held.most_common(6))
    conv1d = any(is_conv1d(m) for m in named.values())
    tip = (
        "; transformers' Conv1D is a Linear stored transposed: shrink.quant.linear_from_conv1d(model) turns each "
        "into an nn.Linear"
        if conv1d
        else ""
    )
    return f"; its layers with weights: {listed}{tip}"


def select_modules(model: nn.Module, selector: Selector | None = None, where: str = "selector") -> dict[str, nn.Module]:
    """Modules of ``model`` chosen by ``selector``, in definition order. Raises if nothing matches.

    Every exact-name ``include``/``ignore`` entry must name a module of the model (a typo is an error), and the
    chosen layers must hold finite weights (compressing NaN/Inf weights gives silent garbage): ModelError if not.
    """
    sel = selector or Selector()
    types = _type_tuple(sel.types, where) if sel.types else (nn.Module,)
    named = dict(model.named_modules())
    for pattern in (*sel.include, *sel.ignore):
        if not pattern.startswith(("re:", "type:")) and pattern not in named:
            raise SelectorError(f"{where}: no module named {pattern!r} in {type(model).__name__}")
    chosen: dict[str, nn.Module] = {}
    for name, module in named.items():
        if not name or not isinstance(module, types):
            continue
        if not any(_matches(p, name, module, where) for p in sel.include):
            continue
        if any(_matches(p, name, module, where) for p in sel.ignore):
            continue
        chosen[name] = module
    if not chosen:
        if isinstance(model, types) and len(named) == 1:
            hint = f"; the model itself is a single {type(model).__name__}: wrap it, e.g. nn.Sequential(model)"
        else:
            hint = _layers_held(named)
        raise SelectorError(
            f"{where}: matched no layer of {type(model).__name__} "
            f"(include={list(sel.include)}, types={list(sel.types)}, ignore={list(sel.ignore)}){hint}"
        )
    for name, module in chosen.items():
        check_model_finite(module, f"{where}: layer {name!r}")
    return chosen
