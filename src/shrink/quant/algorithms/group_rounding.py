"""Group-wise weight rounding for weight-only quantization (int4 / int8 with one scale per ``group`` inputs, and on
an asymmetric grid one zero point too): round to nearest, GPTQ error feedback, and activation-aware input scaling
(AWQ). Every function returns :class:`GroupCodes`: each weight is ``(code - zero) * scale`` (zero 0 when symmetric).

* :func:`rtn_codes`: round to nearest on each group's scale (see :func:`_group_scales`: the group's largest weight
  is kept unless the inputs' energies are given to search a clipped scale; on 4-bit grids it may take the most
  negative code, so all 16 levels are used).
* :func:`gptq_group_codes`: GPTQ (Frantar et al. 2023): columns rounded one at a time, each column's error spread over
  the columns not yet rounded under the inverse of the input second moments ``H = E[x x^T]``; ``act_order`` rounds
  the columns with the largest input energy (``diag H``) first, on group scales fixed from the unrounded weights
  (the reference code's ``desc_act`` with ``static_groups``: the groups stay contiguous for the kernels).
* :func:`awq_input_scales`: AWQ (Lin et al. 2024, "Activation-aware weight quantization"): input channels that carry
  large activations are scaled up in the weight (``W diag(s)``) and down in the input (``x / s``) before rounding,
  so their weights lose less; ``s = mean|x|^alpha`` with ``alpha`` searched on calibration rows for the smallest
  output error. The product ``(x / s) (W diag(s))^T`` equals ``x W^T`` before rounding.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from shrink.quant.algorithms.gptq import round_columns

__all__ = [
    "SCALE_DTYPE",
    "GroupCodes",
    "AWQ_ALPHAS",
    "CLIP_RATIOS",
    "rtn_codes",
    "gptq_group_codes",
    "awq_input_scales",
    "dequantize_groups",
    "stored_scale",
    "check_asymmetric",
]

#: dtype of the stored group scales (what packed int4 / int8 layers hold and ONNX Runtime reads)
SCALE_DTYPE = torch.float16


class GroupCodes(NamedTuple):
    """Codes (int8 ``[out, in]``), scales (float32 ``[out, in / group]``) and, on an asymmetric grid, zero points
    (float32 holding integers in the codes' range, ``[out, in / group]``; None when symmetric): each weight is
    ``(code - zero) * scale``."""

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None = None


def check_asymmetric(asymmetric: bool, bits: int) -> None:
    """A stage's config asks for an asymmetric grid: int4 only (ValueError otherwise, for its validator): the int8
    kernels take no zero point, and only weight_only's packed int4 layers store them."""
    if asymmetric and bits != 4:
        raise ValueError(
            f"asymmetric grids (a zero point per group) are for int4 weights only, got bits={bits}; "
            "leave asymmetric off"
        )


def _qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def stored_scale(scale: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``scale`` as it will be stored in ``dtype`` (None: as is), its magnitude kept at or above the dtype's smallest
    normal number so that no scale underflows to zero (the sign is kept); the result keeps ``scale``'s dtype."""
    if dtype is None:
        return scale
    sign = torch.where(scale < 0, -1.0, 1.0).to(scale.dtype)
    return (sign * scale.abs().clamp(min=torch.finfo(dtype).tiny)).to(dtype).to(scale.dtype)


#: fractions of a group's largest magnitude that :func:`_group_scales` tries as its clipping point when it is given
#: the inputs' energies (1.0 first: no clipping)
CLIP_RATIOS = tuple(1 - i / 50 for i in range(21))


def _group_scales(
    w: torch.Tensor,
    bits: int,
    group: int,
    scale_dtype: torch.dtype | None = None,
    energy: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric scales [out, in / group]. Without ``energy`` they keep each group's largest weight: it maps to the
    largest positive code (``amax / qmax``), or -- on grids of 4 bits or fewer, where one level matters, and when
    the group's squared rounding error is smaller -- the group's signed extreme maps to the most negative code (a
    scale of ``-extreme / (qmax + 1)``, negative when the extreme is positive): one step finer, all ``2**bits``
    levels used, and only weights of the other sign beyond ``qmax / (qmax + 1)`` of the extreme clipped by less
    than a step. Each scale is rounded to ``scale_dtype`` (the dtype it is stored in) before its error is measured.

    ``energy`` (shape ``(in,)``, the mean squared input of each column, ``diag E[x x^T]``): the error of each weight
    is weighted by its input's energy -- the part of the layer's output error that each column causes on its own --
    and the clipped scales ``ratio * amax / qmax`` (:data:`CLIP_RATIOS`) compete too. Clipping for the smallest
    *unweighted* weight error was tried and dropped: it cuts the large weights a transformer depends on, and on
    SmolLM2-135M (int4, group 64) it raised perplexity for every method; weighted by the inputs' energy, after a
    rotation (:mod:`shrink.llm.rotate`), it lowered it."""
    wg = w.reshape(w.shape[0], -1, group)
    amax = wg.abs().amax(-1).clamp(min=1e-8)
    qmax = _qmax(bits)
    weight = 1.0 if energy is None else energy.to(wg.dtype).reshape(1, -1, group)

    def err(scale: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(torch.round(wg / scale[..., None]), -qmax - 1, qmax)
        return ((q * scale[..., None] - wg) ** 2 * weight).sum(-1)

    candidates = []
    if bits <= 4:  # int8 kernels elsewhere expect positive scales
        extreme = torch.gather(wg, -1, wg.abs().argmax(-1, keepdim=True))[..., 0]
        extreme = torch.where(extreme.abs() < 1e-8, torch.full_like(extreme, 1e-8), extreme)
        candidates.append(stored_scale(-extreme / (qmax + 1), scale_dtype))
    if energy is not None:
        candidates += [stored_scale(amax * r / qmax, scale_dtype) for r in CLIP_RATIOS[1:]]
    best = stored_scale(amax / qmax, scale_dtype)
    if not candidates:
        return best
    best_err = err(best)
    for scale in candidates:
        e = err(scale)
        better = e < best_err
        best, best_err = torch.where(better, scale, best), torch.where(better, e, best_err)
    return best


def _asymmetric_grid(
    w: torch.Tensor,
    bits: int,
    group: int,
    scale_dtype: torch.dtype | None = None,
    energy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric scales and zero points [out, in / group]: each group's range (zero included, so that 0 is a level)
    spread over all ``2**bits`` levels, ``scale = (max - min) / (2**bits - 1)`` rounded to ``scale_dtype``, the zero
    point the code nearest to ``0``. With ``energy``, the ranges shrunk to each of :data:`CLIP_RATIOS` compete for
    the smallest energy-weighted rounding error, as in :func:`_group_scales`."""
    wg = w.reshape(w.shape[0], -1, group)
    lo, hi = wg.amin(-1).clamp(max=0), wg.amax(-1).clamp(min=0)
    qmin, qmax = -_qmax(bits) - 1, _qmax(bits)
    weight = 1.0 if energy is None else energy.to(wg.dtype).reshape(1, -1, group)

    def grid(ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
        scale = stored_scale(((hi - lo) * ratio / (qmax - qmin)).clamp(min=1e-8), scale_dtype)
        return scale, torch.clamp(torch.round(qmin - lo * ratio / scale), qmin, qmax)

    def err(scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(torch.round(wg / scale[..., None]) + zero[..., None], qmin, qmax)
        return (((q - zero[..., None]) * scale[..., None] - wg) ** 2 * weight).sum(-1)

    scale, zero = grid(1.0)
    if energy is None:
        return scale, zero
    best_err = err(scale, zero)
    for ratio in CLIP_RATIOS[1:]:
        s, z = grid(ratio)
        e = err(s, z)
        better = e < best_err
        scale, zero, best_err = (
            torch.where(better, s, scale),
            torch.where(better, z, zero),
            torch.where(better, e, best_err),
        )
    return scale, zero


def _grid(
    w: torch.Tensor,
    bits: int,
    group: int,
    scale_dtype: torch.dtype | None,
    energy: torch.Tensor | None,
    asymmetric: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scales and (asymmetric only) zero points [out, in / group] of ``w``'s groups."""
    if asymmetric:
        return _asymmetric_grid(w, bits, group, scale_dtype, energy)
    return _group_scales(w, bits, group, scale_dtype, energy), None


def _expand(x: torch.Tensor | None, group: int) -> torch.Tensor | float:
    return 0.0 if x is None else x.repeat_interleave(group, dim=1)


def rtn_codes(
    w: torch.Tensor,
    bits: int,
    group: int,
    scale_dtype: torch.dtype | None = None,
    energy: torch.Tensor | None = None,
    asymmetric: bool = False,
) -> GroupCodes:
    """Round-to-nearest codes (int8 tensor, shape of ``w``) and scales [out, in / group] (float32 values exactly
    representable in ``scale_dtype``: the codes are rounded on the grid that will be stored), symmetric or, with
    ``asymmetric``, with zero points (:func:`_asymmetric_grid`). ``energy``: each input's mean square, to search
    clipped scales (:func:`_group_scales`)."""
    scales, zeros = _grid(w.float(), bits, group, scale_dtype, energy, asymmetric)
    full = scales.repeat_interleave(group, dim=1)
    codes = torch.clamp(torch.round(w.float() / full) + _expand(zeros, group), -_qmax(bits) - 1, _qmax(bits))
    return GroupCodes(codes.to(torch.int8), scales, zeros)


@torch.no_grad()
def gptq_group_codes(
    w: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    group: int,
    damp: float = 0.01,
    scale_dtype: torch.dtype | None = None,
    act_order: bool = False,
    clip: bool = False,
    asymmetric: bool = False,
) -> GroupCodes:
    """GPTQ codes on the group grid (symmetric, or with zero points when ``asymmetric``): each group's grid is set
    from the error-updated weights when the column loop reaches it (as in the GPTQ reference implementation), its
    scale rounded to ``scale_dtype`` (the dtype it is stored in), then columns are rounded one at a time.
    ``act_order``: see :func:`_gptq_act_order`. ``clip``: each group's scale is searched among clipped ones,
    weighing each column's error by its input energy ``diag H`` (:func:`_group_scales`)."""
    w = w.detach().double().clone()
    h = hessian.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    energy = torch.diag(h).clone() if clip else None
    if act_order:
        return _gptq_act_order(w, h, bits, group, damp, scale_dtype, energy, asymmetric)
    h += damp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    codes, scales = torch.empty_like(w), torch.empty(w.shape[0], w.shape[1] // group, dtype=w.dtype)
    zeros = torch.zeros_like(scales)
    qmin, qmax = -_qmax(bits) - 1, _qmax(bits)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny column ops
    try:
        for start in range(0, w.shape[1], group):
            end = start + group
            part = None if energy is None else energy[start:end]
            scale, zero = _grid(w[:, start:end], bits, group, scale_dtype, part, asymmetric)
            scales[:, start // group] = scale = scale[:, 0]
            zeros[:, start // group] = zero = torch.zeros_like(scale) if zero is None else zero[:, 0]
            errs = torch.empty(w.shape[0], group, dtype=w.dtype)
            for i in range(start, end):
                q = torch.clamp(torch.round(w[:, i] / scale) + zero, qmin, qmax)
                codes[:, i] = q
                err = (w[:, i] - (q - zero) * scale) / hinv[i, i]
                w[:, i:end] -= err[:, None] * hinv[i, i:end][None, :]
                errs[:, i - start] = err
            w[:, end:] -= errs @ hinv[start:end, end:]
    finally:
        torch.set_num_threads(threads)
    return GroupCodes(codes.to(torch.int8), scales.float(), zeros.float() if asymmetric else None)


def _gptq_act_order(
    w: torch.Tensor,
    h: torch.Tensor,
    bits: int,
    group: int,
    damp: float,
    scale_dtype: torch.dtype | None,
    energy: torch.Tensor | None,
    asymmetric: bool,
) -> GroupCodes:
    """GPTQ in order of decreasing ``diag H`` on static group grids: the grids come from the unrounded weights (as
    :func:`rtn_codes` sets them), then the columns are permuted so that those whose inputs carry the most energy are
    rounded first and the error lands on the columns that matter less; codes return in the original column order.
    ``w`` and ``h`` are float64 copies with dead inputs already handled."""
    scales, zeros = _grid(w.float(), bits, group, scale_dtype, None if energy is None else energy.float(), asymmetric)
    perm = torch.argsort(torch.diag(h), descending=True, stable=True)
    w, h = w[:, perm], h[perm][:, perm]
    h += damp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    col_scale = scales.double().repeat_interleave(group, dim=1)[:, perm]
    col_zero = torch.zeros_like(col_scale) if zeros is None else zeros.double().repeat_interleave(group, 1)[:, perm]
    codes = round_columns(w, hinv, col_scale, col_zero, -_qmax(bits) - 1, _qmax(bits))
    return GroupCodes(codes[:, torch.argsort(perm)], scales.float(), zeros)


def dequantize_groups(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None = None) -> torch.Tensor:
    """Float weights from codes [out, in], scales and (asymmetric grids) zero points [out, in / group]."""
    group = codes.shape[1] // scales.shape[1]
    return (codes.float() - _expand(zeros, group)) * scales.float().repeat_interleave(group, dim=1)


#: exponents tried by :func:`awq_input_scales` (0: no scaling)
AWQ_ALPHAS = tuple(i / 10 for i in range(11))


@torch.no_grad()
def awq_input_scales(
    rows: torch.Tensor, weight: torch.Tensor, bits: int, group: int, asymmetric: bool = False
) -> tuple[torch.Tensor, float]:
    """Per-input-channel scales ``s`` (shape ``(in,)``) for ``weight`` [out, in] from calibration ``rows`` [n, in] of
    its input, and the chosen ``alpha``: the ``s = mean|x|^alpha`` (divided by ``sqrt(max(s) min(s))``, so that the
    largest and smallest factors are reciprocal) whose
    rounded ``W diag(s)`` (on the grid :func:`rtn_codes` gives, ``asymmetric`` or not) applied to ``x / s``
    reproduces ``x W^T`` best."""
    x, w = rows.float(), weight.float()
    mean_abs = x.abs().mean(0).clamp(min=1e-6)
    reference = x @ w.T
    best: tuple[float, float, torch.Tensor] | None = None
    for alpha in AWQ_ALPHAS:
        s = mean_abs.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        rounded = dequantize_groups(*rtn_codes(w * s, bits, group, asymmetric=asymmetric))
        err = float(((x / s) @ rounded.T - reference).pow(2).mean())
        if best is None or err < best[0]:
            best = (err, alpha, s)
    assert best is not None  # AWQ_ALPHAS is not empty
    return best[2], best[1]
