"""Activation smoothing (SmoothQuant, Xiao et al. 2023): move per-channel activation outliers into the weights.

For a Linear ``y = W x`` with input channel ``j``: ``s_j = max|x_j|^alpha / max|W_:j|^(1 - alpha)``, then
``y = (W diag(s)) (x / s)``. The scaled input has a much flatter range, so one per-tensor (or per-batch) activation
scale loses less; the weight absorbs the outlier channels and stays per-output-channel quantized. The division is
an explicit per-channel multiply in front of the quantized layer (``input_smooth``), exported as an ONNX ``Mul``.

``alpha="auto"`` picks, for each input, the alpha of :data:`ALPHA_GRID` whose smoothed, quantized layers (int8
per-channel weights, the layers' own activation granularity) reproduce the float outputs best on calibration rows
— the per-layer search of the SmoothQuant paper's follow-ups, on calibration data only.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch
from torch import nn

from shrink.data import forward_pre_hooks, shared_input_groups
from shrink.quant.algorithms.calibrate import run_calibration
from shrink.quant.algorithms.observers import MinMaxObserver

__all__ = ["smoothing_factors", "smooth_layers", "ALPHA_GRID"]

#: candidates of ``alpha="auto"``
ALPHA_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
#: calibration rows kept per input for the search
_SEARCH_ROWS = 2048


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


def _quantized_error(
    rows: torch.Tensor, weights: list[torch.Tensor], act_absmax: torch.Tensor, alpha: float, per_token: bool
) -> float:
    """Squared output error of the layers reading ``rows`` once smoothed with ``alpha`` and quantized (int8
    symmetric per-channel weights, round to nearest; uint8 activations per token or per tensor)."""
    from shrink.quant.numerics.qparams import dynamic_fake_quant, fake_quantize, qparams_for_tensor

    s = smoothing_factors(act_absmax, torch.cat(weights), alpha)
    xq = dynamic_fake_quant(rows / s, per_token=per_token)
    err = 0.0
    for w in weights:
        ws = w * s
        wq = fake_quantize(ws, qparams_for_tensor(ws, 8, symmetric=True, axis=0, narrow_range=True))
        err += float((xq @ wq.T - rows @ w.T).pow(2).sum())
    return err


@torch.no_grad()
def smooth_layers(
    model: nn.Module,
    layers: dict[str, nn.Module],
    data: Any,
    alpha: float | str,
    limit: int | None = None,
    per_token: Collection[str] = (),
) -> tuple[dict[str, torch.Tensor], list[Any]]:
    """Measure input channel ranges of the Linear ``layers`` on ``data``, scale their weights by ``s`` in place and
    hook ``x / s`` on their inputs. Layers that read the very same input tensor (an attention block's query / key /
    value) share one ``s``, from the largest weight column of the group as in the SmoothQuant paper, so their
    smoothed input stays one tensor (quantized once; mergeable into one GEMM). Returns ``{name: 1 / s}`` and the
    hook handles (remove them after conversion). ``alpha="auto"``: searched per input on calibration rows, with
    the layers named in ``per_token`` quantizing their input per token (the others per tensor)."""
    linears = {n: m for n, m in layers.items() if isinstance(m, nn.Linear)}
    observers = {n: MinMaxObserver(axis=-1, name=f"{n}.input") for n in linears}
    kept: dict[str, list[torch.Tensor]] = {n: [] for n in linears}

    def observe_one(name: str, x: torch.Tensor) -> None:
        observers[name].update(x)
        if alpha == "auto" and sum(len(r) for r in kept[name]) < _SEARCH_ROWS:
            kept[name].append(x.detach().reshape(-1, x.shape[-1]).float())

    observe: dict[nn.Module, Any] = {m: (lambda mod, args, n=n: observe_one(n, args[0])) for n, m in linears.items()}
    with forward_pre_hooks(observe):
        run_calibration(model, data, limit)
    shared = shared_input_groups(model, linears, data, limit)
    grouped = {n for g in shared for n in g}
    inverse, hooks = {}, []
    for group in shared + [[n] for n in linears if n not in grouped]:
        lo, hi = observers[group[0]].bounds()  # the same input: the same ranges
        absmax = torch.maximum(lo.abs(), hi.abs())
        weights = [linears[n].weight.detach() for n in group]
        if alpha == "auto":
            rows = torch.cat(kept[group[0]])[:_SEARCH_ROWS]
            token = group[0] in per_token
            chosen = min(ALPHA_GRID, key=lambda a: _quantized_error(rows, weights, absmax, a, token))
        else:
            chosen = float(alpha)
        s = smoothing_factors(absmax, torch.cat(weights), chosen)
        for name in group:
            linears[name].weight.mul_(s)
            inverse[name] = (1.0 / s).float()
            hooks.append(linears[name].register_forward_pre_hook(_DivideInput(inverse[name])))
    return inverse, hooks
