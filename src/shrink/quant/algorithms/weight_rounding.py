"""Calibration-driven rounding of weight-only Linears: AWQ input scaling and GPTQ codes on the group grid.

Both read the calibration data once through forward pre-hooks on the float model: AWQ keeps up to
:data:`AWQ_ROWS` input rows per layer, GPTQ accumulates each layer's input second moments ``E[x x^T]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shrink.api import Context
from shrink.data import forward_pre_hooks
from shrink.errors import ConfigError, DataError
from shrink.quant.algorithms.calibrate import run_calibration
from shrink.quant.algorithms.gptq import input_hessians
from shrink.quant.algorithms.group_rounding import SCALE_DTYPE, awq_input_scales, gptq_group_codes, rtn_codes

__all__ = ["Rounded", "learned_codes", "AWQ_ROWS"]

#: calibration rows per layer kept for the AWQ scale search
AWQ_ROWS = 2048


@dataclass(frozen=True)
class Rounded:
    """One Linear's integer codes [out, in], group scales [out, in / group] and, with AWQ, the factor ``1 / s`` that
    multiplies its input."""

    codes: torch.Tensor
    scales: torch.Tensor
    input_scale: torch.Tensor | None = None


def _input_rows(model: nn.Module, layers: dict[str, nn.Linear], data: Any) -> dict[str, torch.Tensor]:
    kept: dict[str, list[torch.Tensor]] = {n: [] for n in layers}

    def keep(name: str):  # noqa: ANN202
        def pre(module: nn.Module, args: tuple[Any, ...]) -> None:
            if sum(len(r) for r in kept[name]) < AWQ_ROWS:
                kept[name].append(args[0].detach().reshape(-1, args[0].shape[-1]).float())

        return pre

    with forward_pre_hooks({m: keep(n) for n, m in layers.items()}):
        run_calibration(model, data)
    missing = [n for n, rows in kept.items() if not rows]
    if missing:
        raise DataError(f"weight_only: layer {missing[0]!r} saw no calibration input")
    return {n: torch.cat(rows)[:AWQ_ROWS] for n, rows in kept.items()}


@torch.no_grad()
def learned_codes(model: nn.Module, layers: dict[str, nn.Linear], config: Any, ctx: Context) -> dict[str, Rounded]:
    """Codes of every Linear in ``layers`` as ``config`` (a :class:`shrink.quant.WeightOnly`) says, learned from
    ``ctx.calibration``."""
    if ctx.calibration is None:
        asked = [
            f
            for f, on in (
                ("weight_rounding='gptq'", config.weight_rounding == "gptq"),
                ("activation_aware=True", config.activation_aware),
            )
            if on
        ]
        raise ConfigError(
            f"weight_only: {' and '.join(asked)} learn(s) from calibration data, and none was given "
            "(calibration= in Python, DataBundle.calibration in a recipe)"
        )
    data = list(ctx.calibration)
    rows = _input_rows(model, layers, data) if config.activation_aware else {}
    hessians = input_hessians(model, layers, data) if config.weight_rounding == "gptq" else {}
    out = {}
    for name, layer in layers.items():
        w = layer.weight.detach().float()
        s = awq_input_scales(rows[name], w, config.bits, config.group_size)[0] if name in rows else None
        if s is not None:
            w = w * s
        if name in hessians:
            h = hessians[name] if s is None else hessians[name] / torch.outer(s, s).double()
            codes, scales = gptq_group_codes(w, h, config.bits, config.group_size, scale_dtype=SCALE_DTYPE)
        else:
            codes, scales = rtn_codes(w, config.bits, config.group_size, SCALE_DTYPE)
        out[name] = Rounded(codes, scales, None if s is None else 1.0 / s)
    return out
