"""Whole-layer removal: replace residual blocks / transformer layers by an identity on their first input."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from shrink.api import Context, implements
from shrink.data import call_model
from shrink.errors import ConfigError, DataError, ModelError
from shrink.export.artifact import register_layer
from shrink.graph import output_tensors
from shrink.pruning.structured.config import LayerRemoval
from shrink.select import select_modules

__all__ = ["SkippedLayer", "remove_layers", "block_candidates"]


@register_layer
class SkippedLayer(nn.Module):
    """A removed block: returns its first input unchanged (saved and loaded as such)."""

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        return x

    def shrink_manifest(self) -> dict[str, Any]:
        return {}

    @classmethod
    def shrink_from_manifest(cls, args: dict[str, Any]) -> SkippedLayer:
        return cls()


def _io_shapes(model: nn.Module, inputs: Any, names: list[str]) -> dict[str, bool]:
    """Which of the named modules return a tensor shaped like their first input on ``inputs``."""
    same: dict[str, bool] = {}

    def hook(name: str):
        def fn(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
            x = args[0] if args else next(iter(kwargs.values()), None)
            y = out if isinstance(out, torch.Tensor) else (out[0] if isinstance(out, (tuple, list)) and out else None)
            same[name] = isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.shape == y.shape

        return fn

    handles = [model.get_submodule(n).register_forward_hook(hook(n), with_kwargs=True) for n in names]
    try:
        with torch.no_grad():
            call_model(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return same


def block_candidates(model: nn.Module, inputs: Any) -> list[str]:
    """Blocks held in an nn.Sequential / nn.ModuleList, with parameters, whose output has their input's shape."""
    names = [
        f"{p}.{c}" if p else c
        for p, m in model.named_modules()
        if isinstance(m, (nn.Sequential, nn.ModuleList))
        for c, child in m.named_children()
        if len(list(child.children())) and next(child.parameters(), None) is not None
    ]
    same = _io_shapes(model, inputs, names)
    return [n for n in names if same.get(n)]


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _outputs(model: nn.Module, inputs: Any) -> list[torch.Tensor]:
    with torch.no_grad():
        return output_tensors(call_model(model, inputs))


def remove_layers(model: nn.Module, names: list[str]) -> nn.Module:
    for n in names:
        _set(model, n, SkippedLayer())
    return model


@implements(LayerRemoval)
def layer_removal(model: nn.Module, config: LayerRemoval, ctx: Context) -> nn.Module:
    """Remove the named blocks, or the ``count`` blocks whose removal changes the output least."""
    if bool(config.layers) == (config.count is not None):
        raise ConfigError("layer_removal: give either layers=[...] or count=N")
    if ctx.example_inputs is None:
        raise DataError("layer_removal needs example_inputs=... to check the blocks it removes")
    model.eval()
    if config.layers:
        missing = [n for n in config.layers if n not in dict(model.named_modules())]
        if missing:
            raise ConfigError(f"layer_removal.layers: no module named {missing[0]!r} in {type(model).__name__}")
        chosen = list(config.layers)
    else:
        cands = block_candidates(model, ctx.example_inputs)
        if config.selector is not None:
            picked = select_modules(model, config.selector, where="layer_removal.selector")
            cands = [c for c in cands if c in picked]
        count = config.count
        assert count is not None  # checked above: exactly one of layers / count is given
        if len(cands) < count:
            raise ConfigError(f"layer_removal: {len(cands)} removable blocks found, count={config.count}")
        ref = _outputs(model, ctx.example_inputs)
        impact = {}
        for name in cands:
            block = model.get_submodule(name)
            _set(model, name, SkippedLayer())
            out = _outputs(model, ctx.example_inputs)
            _set(model, name, block)
            impact[name] = sum(float((a - b).norm() / (b.norm() + 1e-12)) for a, b in zip(out, ref, strict=True))
        chosen = sorted(cands, key=lambda n: impact[n])[:count]
    shapes = [t.shape for t in _outputs(model, ctx.example_inputs)]
    remove_layers(model, chosen)
    try:
        after = [t.shape for t in _outputs(model, ctx.example_inputs)]
    except Exception as exc:
        raise ModelError(f"layer_removal: the model fails without {chosen}: {type(exc).__name__}: {exc}") from exc
    if after != shapes:
        raise ModelError(f"layer_removal: removing {chosen} changes the output shapes")
    ctx.notes.append(f"layer_removal: removed {', '.join(chosen)}")
    return model
