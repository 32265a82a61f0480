"""The input rows ``(tokens, features)`` a layer sees on calibration data, with padding tokens left out.

GPTQ's Hessians and AWQ's scale search both weigh a Linear's rounding error by the inputs it really receives; the
padding positions of a batch (its ``attention_mask``) carry no signal and are dropped from both.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from shrink.data import call_model, forward_pre_hooks, split_batch
from shrink.errors import DataError

__all__ = ["token_rows", "calibration_inputs", "layer_input_rows"]


def token_rows(inputs: Any, x: torch.Tensor) -> torch.Tensor:
    """``x``'s rows ``(tokens, features)``, without the padding positions when the batch's ``attention_mask``
    ``(batch, seq)`` lines up with ``x``'s first two dimensions."""
    rows = x.detach().reshape(-1, x.shape[-1])
    mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
    if isinstance(mask, torch.Tensor) and mask.dim() == 2 and x.dim() >= 3 and tuple(x.shape[:2]) == tuple(mask.shape):
        keep = mask.reshape(-1) != 0
        rows = rows[keep.repeat_interleave(rows.shape[0] // keep.numel())] if keep.numel() else rows
    return rows


def calibration_inputs(data: Any, limit: int | None) -> Iterator[Any]:
    """The model inputs of the first ``limit`` (None: all) calibration batches, targets split off."""
    if data is None:
        raise DataError("calibration data is required (pass calibration=<iterable of batches>)")
    if not isinstance(data, Iterable):
        raise DataError(f"calibration data must be an iterable of batches, got {type(data).__name__}")
    for i, batch in enumerate(data):
        if limit is not None and i >= limit:
            break
        yield split_batch(batch)[0]


@torch.no_grad()
def layer_input_rows(
    model: nn.Module, layers: Mapping[str, nn.Module], data: Any, max_rows: int, limit: int | None = None
) -> dict[str, torch.Tensor]:
    """Up to ``max_rows`` input rows (float32, padding left out) of each layer in ``layers``, in calibration order;
    a layer that sees no input is an error naming it."""
    kept: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    counts = dict.fromkeys(layers, 0)
    model.eval()
    for inputs in calibration_inputs(data, limit):

        def keep(name: str, inputs: Any = inputs):  # noqa: ANN202
            def pre(module: nn.Module, args: tuple[Any, ...]) -> None:
                if counts[name] < max_rows:
                    rows = token_rows(inputs, args[0]).float()
                    kept[name].append(rows)
                    counts[name] += rows.shape[0]

            return pre

        with forward_pre_hooks({m: keep(n) for n, m in layers.items()}):
            call_model(model, inputs)
        if all(c >= max_rows for c in counts.values()):
            break
    missing = [n for n, c in counts.items() if c == 0]
    if missing:
        raise DataError(f"layer {missing[0]!r} saw no calibration input")
    return {n: torch.cat(rows)[:max_rows] for n, rows in kept.items()}
