"""Group-wise symmetric weight rounding for weight-only quantization (int4 / int8 with one scale per ``group``
inputs): round to nearest with a clipping search, GPTQ error feedback, and activation-aware input scaling (AWQ).

* :func:`rtn_codes`: per group, the clipping ratio of :data:`CLIP_RATIOS` with the smallest squared rounding error.
* :func:`gptq_group_codes`: GPTQ (Frantar et al. 2023): columns rounded one at a time, each column's error spread over
  the columns not yet rounded under the inverse of the input second moments ``H = E[x x^T]``.
* :func:`awq_input_scales`: AWQ (Lin et al. 2024, "Activation-aware weight quantization"): input channels that carry
  large activations are scaled up in the weight (``W diag(s)``) and down in the input (``x / s``) before rounding,
  so their weights lose less; ``s = mean|x|^alpha`` with ``alpha`` searched on calibration rows for the smallest
  output error. The product ``(x / s) (W diag(s))^T`` equals ``x W^T`` before rounding.
"""

from __future__ import annotations

import torch

__all__ = [
    "SCALE_DTYPE",
    "CLIP_RATIOS",
    "AWQ_ALPHAS",
    "rtn_codes",
    "gptq_group_codes",
    "awq_input_scales",
    "dequantize_groups",
    "stored_scale",
]

#: dtype of the stored group scales (what packed int4 / int8 layers hold and ONNX Runtime reads)
SCALE_DTYPE = torch.float16


def _qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


#: clipping ratios tried per group (1.0 = the group's largest magnitude maps to the largest code)
CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)


def stored_scale(scale: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``scale`` as it will be stored in ``dtype`` (None: as is), kept at or above the dtype's smallest normal number
    so that no scale underflows to zero; the result keeps ``scale``'s dtype."""
    if dtype is None:
        return scale
    return scale.clamp(min=torch.finfo(dtype).tiny).to(dtype).to(scale.dtype)


def _group_scales(w: torch.Tensor, bits: int, group: int, scale_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Symmetric scales [out, in / group]: per group, the clipping ratio (of ``CLIP_RATIOS``) with the smallest
    squared rounding error (for int8 the unclipped ratio: clipping only pays on coarse grids), each scale rounded to
    ``scale_dtype`` (the dtype it is stored in) before the error is measured."""
    wg = w.reshape(w.shape[0], -1, group)
    amax = wg.abs().amax(-1).clamp(min=1e-8)
    qmax = _qmax(bits)
    best, best_err = stored_scale(amax / qmax, scale_dtype), None
    for ratio in CLIP_RATIOS if bits <= 4 else (1.0,):
        scale = stored_scale(amax * ratio / qmax, scale_dtype)
        q = torch.clamp(torch.round(wg / scale[..., None]), -qmax - 1, qmax)
        err = ((q * scale[..., None] - wg) ** 2).sum(-1)
        if best_err is None:
            best, best_err = scale, err
        else:
            better = err < best_err
            best, best_err = torch.where(better, scale, best), torch.where(better, err, best_err)
    return best


def rtn_codes(
    w: torch.Tensor, bits: int, group: int, scale_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Round-to-nearest symmetric codes (int8 tensor, shape of ``w``) and scales [out, in / group] (float32 values
    exactly representable in ``scale_dtype``: the codes are rounded on the grid that will be stored)."""
    scales = _group_scales(w.float(), bits, group, scale_dtype)
    full = scales.repeat_interleave(group, dim=1)
    codes = torch.clamp(torch.round(w.float() / full), -_qmax(bits) - 1, _qmax(bits))
    return codes.to(torch.int8), scales


@torch.no_grad()
def gptq_group_codes(
    w: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    group: int,
    damp: float = 0.01,
    scale_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ codes on the symmetric group grid: each group's scale is set from the error-updated weights when the
    column loop reaches it (as in the GPTQ reference implementation), rounded to ``scale_dtype`` (the dtype it is
    stored in), then columns are rounded one at a time."""
    w = w.detach().double().clone()
    h = hessian.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    codes, scales = torch.empty_like(w), torch.empty(w.shape[0], w.shape[1] // group, dtype=w.dtype)
    qmin, qmax = -_qmax(bits) - 1, _qmax(bits)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny column ops
    try:
        for start in range(0, w.shape[1], group):
            end = start + group
            scale = _group_scales(w[:, start:end], bits, group, scale_dtype)[:, 0]
            scales[:, start // group] = scale
            errs = torch.empty(w.shape[0], group, dtype=w.dtype)
            for i in range(start, end):
                q = torch.clamp(torch.round(w[:, i] / scale), qmin, qmax)
                codes[:, i] = q
                err = (w[:, i] - q * scale) / hinv[i, i]
                w[:, i:end] -= err[:, None] * hinv[i, i:end][None, :]
                errs[:, i - start] = err
            w[:, end:] -= errs @ hinv[start:end, end:]
    finally:
        torch.set_num_threads(threads)
    return codes.to(torch.int8), scales.float()


def dequantize_groups(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Float weights from codes [out, in] and scales [out, in / group]."""
    group = codes.shape[1] // scales.shape[1]
    return codes.float() * scales.float().repeat_interleave(group, dim=1)


#: exponents tried by :func:`awq_input_scales` (0: no scaling)
AWQ_ALPHAS = tuple(i / 10 for i in range(11))


@torch.no_grad()
def awq_input_scales(rows: torch.Tensor, weight: torch.Tensor, bits: int, group: int) -> tuple[torch.Tensor, float]:
    """Per-input-channel scales ``s`` (shape ``(in,)``) for ``weight`` [out, in] from calibration ``rows`` [n, in] of
    its input, and the chosen ``alpha``: the ``s = mean|x|^alpha`` (divided by ``sqrt(max(s) min(s))``, so that the
    largest and smallest factors are reciprocal) whose
    rounded ``W diag(s)`` applied to ``x / s`` reproduces ``x W^T`` best."""
    x, w = rows.float(), weight.float()
    mean_abs = x.abs().mean(0).clamp(min=1e-6)
    reference = x @ w.T
    best: tuple[float, float, torch.Tensor] | None = None
    for alpha in AWQ_ALPHAS:
        s = mean_abs.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        codes, scales = rtn_codes(w * s, bits, group)
        err = float(((x / s) @ dequantize_groups(codes, scales).T - reference).pow(2).mean())
        if best is None or err < best[0]:
            best = (err, alpha, s)
    assert best is not None  # AWQ_ALPHAS is not empty
    return best[2], best[1]
