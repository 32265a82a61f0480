"""Error-compensating weight rounding (GPTQ, Frantar et al. 2023, "Accurate post-training quantization for
generative pre-trained transformers").

Round-to-nearest rounds every weight on its own. GPTQ rounds the input columns of a Linear one at a time and
spreads each column's rounding error over the columns not yet rounded, weighted by the inverse of the layer's input
second-moment matrix ``H = E[x x^T]`` measured on calibration data, so that the layer's *output* error
``||W x - W_q x||`` is minimised rather than the weight error. The grid (per-output-channel scales) is unchanged,
so the result runs on the same integer kernels as round-to-nearest codes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from shrink.data import forward_pre_hooks
from shrink.errors import DataError
from shrink.quant.algorithms.calibrate import run_calibration
from shrink.quant.numerics.qparams import QParams

__all__ = ["input_hessians", "gptq_codes"]


@torch.no_grad()
def input_hessians(
    model: nn.Module, layers: dict[str, nn.Linear], data: Any, limit: int | None = None
) -> dict[str, torch.Tensor]:
    """``E[x x^T]`` (float64, shape ``(in, in)``) of each Linear's input over the calibration ``data``."""
    sums = {n: torch.zeros(m.in_features, m.in_features, dtype=torch.float64) for n, m in layers.items()}
    counts = dict.fromkeys(layers, 0)

    def hook(name: str):  # noqa: ANN202
        def pre(mod: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            sums[name] += x.T @ x
            counts[name] += x.shape[0]

        return pre

    with forward_pre_hooks({m: hook(n) for n, m in layers.items()}):
        run_calibration(model, data, limit)
    for name, c in counts.items():
        if c == 0:
            raise DataError(f"GPTQ: layer {name!r} saw no calibration input")
    return {n: sums[n] / counts[n] for n in layers}


@torch.no_grad()
def gptq_codes(
    weight: torch.Tensor, hessian: torch.Tensor, qp: QParams, damp: float = 0.01, block: int = 128
) -> torch.Tensor:
    """Integer codes (int8 tensor, shape of ``weight`` ``(out, in)``) on the per-output-channel symmetric grid ``qp``,
    rounded column by column with GPTQ error feedback under the input second moments ``hessian``."""
    if qp.axis != 0 or qp.group_size is not None:
        raise ValueError("gptq_codes needs a per-output-channel grid (axis 0)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny column ops: thread hand-offs cost more than they save
    try:
        return _gptq(weight, hessian, qp, damp, block)
    finally:
        torch.set_num_threads(threads)


def _gptq(weight: torch.Tensor, hessian: torch.Tensor, qp: QParams, damp: float, block: int) -> torch.Tensor:
    w = weight.detach().double().clone()
    scale = qp.scale.double().reshape(-1)
    zp = qp.zero_point.double().reshape(-1)
    h = hessian.double().clone()
    dead = torch.diag(h) == 0  # inputs that are always zero: their weights do not matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    # upper Cholesky factor of H^-1: row i holds how column i's error propagates to the later columns
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    codes = torch.empty_like(w)
    cols = w.shape[1]
    for start in range(0, cols, block):  # lazy batch updates: the columns after a block are updated once, by matmul
        end = min(start + block, cols)
        errs = torch.empty(w.shape[0], end - start, dtype=w.dtype)
        for i in range(start, end):
            col = w[:, i]
            q = torch.clamp(torch.round(col / scale) + zp, qp.qmin, qp.qmax)
            codes[:, i] = q
            err = (col - (q - zp) * scale) / hinv[i, i]
            w[:, i:end] -= err[:, None] * hinv[i, i:end][None, :]
            errs[:, i - start] = err
        w[:, end:] -= errs @ hinv[start:end, end:]
    return codes.to(torch.int8)
