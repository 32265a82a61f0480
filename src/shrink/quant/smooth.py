"""Activation smoothing (SmoothQuant, Xiao et al. 2023): move per-channel activation outliers into the weights.

For a Linear ``y = W x`` with input channel ``j``: ``s_j = max|x_j|^alpha / max|W_:j|^(1 - alpha)``, then
``y = (W diag(s)) (x / s)``. The scaled input has a much flatter range, so one per-tensor (or per-batch) activation
scale loses less; the weight absorbs the outlier channels and stays per-output-channel quantized. The division is
an explicit per-channel multiply in front of the quantized layer (``input_smooth``), exported as an ONNX ``Mul``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from shrink.data import forward_pre_hooks, shared_input_groups
from shrink.quant.calibrate import run_calibration
from shrink.quant.observers import MinMaxObserver

__all__ = ["smoothing_factors", "smooth_layers"]


def smoothing_factors(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-input-channel factors ``s`` (shape ``(in_features,)``) for ``weight`` of shape ``(out, in)``."""
    w_absmax = weight.detach().abs().amax(dim=0).clamp(min=1e-5)
    a = act_absmax.clamp(min=1e-5)
    s = a.pow(alpha) / w_absmax.pow(1.0 - alpha)
    return s.clamp(min=1e-5)


class _DivideInput:
    def __init__(self, inv: torch.Tensor) -> None:
        self.inv = inv

    def __call__(self, mod: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0] * self.inv, *args[1:])


@torch.no_grad()
def smooth_layers(
    model: nn.Module, layers: dict[str, nn.Module], data: Any, alpha: float, limit: int | None = None
) -> tuple[dict[str, torch.Tensor], list[Any]]:
    """Measure input channel ranges of the Linear ``layers`` on ``data``, scale their weights by ``s`` in place and
    hook ``x / s`` on their inputs. Layers that read the very same input tensor (an attention block's query / key /
    value) share one ``s``, from the largest weight column of the group as in the SmoothQuant paper, so their
    smoothed input stays one tensor (quantized once; mergeable into one GEMM). Returns ``{name: 1 / s}`` and the
    hook handles (remove them after conversion)."""
    linears = {n: m for n, m in layers.items() if isinstance(m, nn.Linear)}
    observers = {n: MinMaxObserver(axis=-1, name=f"{n}.input") for n in linears}
    observe: dict[nn.Module, Any] = {
        m: (lambda mod, args, n=n: observers[n].update(args[0])) for n, m in linears.items()
    }
    with forward_pre_hooks(observe):
        run_calibration(model, data, limit)
    shared = shared_input_groups(model, linears, data, limit)
    grouped = {n for g in shared for n in g}
    inverse, hooks = {}, []
    for group in shared + [[n] for n in linears if n not in grouped]:
        lo, hi = observers[group[0]].bounds()  # the same input: the same ranges
        weights = torch.cat([linears[n].weight for n in group])
        s = smoothing_factors(torch.maximum(lo.abs(), hi.abs()), weights, alpha)
        for name in group:
            linears[name].weight.mul_(s)
            inverse[name] = (1.0 / s).float()
            hooks.append(linears[name].register_forward_pre_hook(_DivideInput(inverse[name])))
    return inverse, hooks
