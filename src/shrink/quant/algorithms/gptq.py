"""Error-compensating weight rounding (GPTQ, Frantar et al. 2023, "Accurate post-training quantization for
generative pre-trained transformers").

Round-to-nearest rounds every weight on its own. GPTQ rounds the input columns of a Linear one at a time and
spreads each column's rounding error over the columns not yet rounded, weighted by the inverse of the layer's input
second-moment matrix ``H = E[x x^T]`` measured on calibration data, so that the layer's *output* error
``||W x - W_q x||`` is minimised rather than the weight error. The grid (per-output-channel scales) is unchanged,
so the result runs on the same integer kernels as round-to-nearest codes.

Padding tokens (a batch's ``attention_mask``) are left out of ``H``; :func:`execution_groups` gives the order in
which the ``gptq`` stage rounds layers one group at a time (``sequential``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from shrink.data import call_model, first_batch, forward_pre_hooks, split_batch
from shrink.errors import DataError
from shrink.quant.algorithms.input_rows import calibration_inputs, token_rows
from shrink.quant.numerics.qparams import QParams

__all__ = ["input_hessians", "gptq_codes", "round_columns", "execution_groups"]


@torch.no_grad()
def gptq_codes(
    weight: torch.Tensor, hessian: torch.Tensor, qp: QParams, damp: float = 0.01, block: int = 128
) -> torch.Tensor:
    """Integer codes (int8 tensor, shape of ``weight`` ``(out, in)``) on the per-output-channel symmetric grid ``qp``,
    rounded column by column with GPTQ error feedback under the input second moments ``hessian``."""
    if qp.axis != 0 or qp.group_size is not None:
        raise ValueError("gptq_codes needs a per-output-channel grid (axis 0)")
    w = weight.detach().double().clone()
    h = hessian.double().clone()
    dead = torch.diag(h) == 0  # inputs that are always zero: their weights do not matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    # upper Cholesky factor of H^-1: row i holds how column i's error propagates to the later columns
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    scale = qp.scale.double().reshape(-1, 1).expand_as(w)
    zero = qp.zero_point.double().reshape(-1, 1).expand_as(w)
    return round_columns(w, hinv, scale, zero, qp.qmin, qp.qmax, block)


def round_columns(
    w: torch.Tensor,
    hinv: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    qmin: int,
    qmax: int,
    block: int = 128,
) -> torch.Tensor:
    """GPTQ's column loop: round column ``i`` of ``w`` (float64, updated in place) on ``scale[:, i]`` /
    ``zero[:, i]`` (``[out, in]``, expanded views are fine) and spread its error over the later columns through
    ``hinv`` (upper Cholesky factor of the damped ``H^-1``); int8 codes. The columns after each block of ``block``
    are updated once, by matmul (lazy batch updates); one thread, as thousands of tiny column ops cost more in
    thread hand-offs than they save."""
    codes = torch.empty_like(w)
    cols = w.shape[1]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for start in range(0, cols, block):
            end = min(start + block, cols)
            errs = torch.empty(w.shape[0], end - start, dtype=w.dtype)
            for i in range(start, end):
                col, s, z = w[:, i], scale[:, i], zero[:, i]
                q = torch.clamp(torch.round(col / s) + z, qmin, qmax)
                codes[:, i] = q
                err = (col - (q - z) * s) / hinv[i, i]
                w[:, i:end] -= err[:, None] * hinv[i, i:end][None, :]
                errs[:, i - start] = err
            w[:, end:] -= errs @ hinv[start:end, end:]
    finally:
        torch.set_num_threads(threads)
    return codes.to(torch.int8)


class _PassDone(Exception):
    """Raised by a hook to end a calibration forward early: the layers being measured have all run."""


def _captured_rows(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    inputs: Any,
    scales: Mapping[str, torch.Tensor],
    stop_after: str | None,
) -> dict[str, list[torch.Tensor]]:
    """Run ``model`` on one batch's ``inputs`` and return each layer's input rows (float64, padding left out),
    multiplied by ``scales[name]`` where given; the forward ends once ``stop_after`` has run."""
    rows: dict[str, list[torch.Tensor]] = {n: [] for n in layers}

    def hook(name: str):  # noqa: ANN202
        def pre(mod: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0] * scales[name] if name in scales else args[0]
            rows[name].append(token_rows(inputs, x).double())
            if name == stop_after:
                raise _PassDone

        return pre

    with forward_pre_hooks({m: hook(n) for n, m in layers.items()}), contextlib.suppress(_PassDone):
        call_model(model, inputs)
    return rows


@torch.no_grad()
def input_hessians(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    data: Any,
    limit: int | None = None,
    *,
    input_scales: Mapping[str, torch.Tensor] | None = None,
    stop_after: str | None = None,
) -> dict[str, torch.Tensor]:
    """``E[x x^T]`` (float64, shape ``(in, in)``) of each layer's input over the calibration ``data``, padding
    tokens left out (batches whose ``attention_mask`` lines up with the layer input). ``input_scales[name]``
    multiplies that layer's input first (a smoothed layer's ``input_smooth``); ``stop_after``: end each forward
    once this layer has run (the later layers' work is not needed)."""
    dims = {n: int(getattr(m, "in_features")) for n, m in layers.items()}  # noqa: B009
    sums = {n: torch.zeros(d, d, dtype=torch.float64) for n, d in dims.items()}
    counts = dict.fromkeys(layers, 0)
    model.eval()
    for inputs in calibration_inputs(data, limit):
        for name, parts in _captured_rows(model, layers, inputs, input_scales or {}, stop_after).items():
            for rows in parts:
                sums[name] += rows.T @ rows
                counts[name] += rows.shape[0]
    for name, c in counts.items():
        if c == 0:
            raise DataError(f"GPTQ: layer {name!r} saw no calibration input")
    return {n: sums[n] / counts[n] for n in layers}


@torch.no_grad()
def execution_groups(model: nn.Module, layers: Mapping[str, nn.Module], data: Any) -> list[list[str]]:
    """The layers in the order the first calibration batch runs them, those reading the very same input tensor
    (an attention block's query / key / value) in one group. A layer that runs more than once per forward (shared
    weights) or never is an error: sequential rounding needs one input per layer."""
    order: list[tuple[str, int]] = []

    def hook(name: str):  # noqa: ANN202
        def pre(mod: nn.Module, args: tuple[Any, ...]) -> None:
            order.append((name, id(args[0])))

        return pre

    model.eval()
    with forward_pre_hooks({m: hook(n) for n, m in layers.items()}):
        call_model(model, split_batch(first_batch(data))[0])
    names = [n for n, _ in order]
    repeated = sorted({n for n in names if names.count(n) > 1})
    missing = sorted(set(layers) - set(names))
    if repeated or missing:
        what = f"runs more than once per forward: {repeated}" if repeated else f"never runs: {missing}"
        raise DataError(f"GPTQ (sequential): a layer {what}")
    groups: list[list[str]] = []
    last_input = None
    for name, ident in order:
        if groups and ident == last_input:
            groups[-1].append(name)
        else:
            groups.append([name])
        last_input = ident
    return groups
