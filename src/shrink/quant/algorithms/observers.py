"""Observers: watch tensors during calibration and choose a clipping range, then a :class:`QParams` grid.

* ``minmax`` — running min / max (per tensor, per channel or per group).
* ``moving_average`` — exponential moving average of batch min / max (PyTorch's MovingAverageMinMaxObserver).
* ``percentile`` — clip at the given percentile of the values (and the mirrored one below).
* ``mse`` — search the clipping factor that minimises the quantization MSE (per channel for weights).
* ``entropy`` — TensorRT-style KL-divergence calibration on a 2048-bin histogram.
* ``aciq_laplace`` / ``aciq_gaussian`` — analytical clipping (Banner et al., "Post-training 4-bit quantization of
  convolution networks for rapid-deployment", 2019): the clip ``alpha`` that minimises clipping noise plus rounding
  noise ``alpha^2 / (3 * 4^bits)`` for a Laplace(b) or Gaussian(sigma) fit of the data.

Sample-based observers keep a bounded random subsample (``max_samples``) so memory stays flat.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from shrink.errors import ConfigError, DataError
from shrink.quant.numerics.qparams import QParams, _rows, check_bits, compute_qparams, fake_quantize

__all__ = [
    "channel_grid",
    "Observer",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "PercentileObserver",
    "MSEObserver",
    "EntropyObserver",
    "ACIQObserver",
    "OBSERVERS",
    "make_observer",
    "aciq_alpha",
]


class Observer:
    """Base class: ``update(x)`` on every calibration tensor, then ``bounds()`` / ``qparams()``."""

    per_channel_ok = True

    def __init__(
        self,
        bits: int = 8,
        *,
        symmetric: bool = False,
        signed: bool = True,
        axis: int | None = None,
        group_size: int | None = None,
        narrow_range: bool = False,
        name: str = "tensor",
    ) -> None:
        self.bits = check_bits(bits, f"{type(self).__name__}({name}).bits")
        self.symmetric, self.signed, self.axis, self.group_size = symmetric, signed, axis, group_size
        self.narrow_range, self.name = narrow_range, name
        if (axis is not None or group_size is not None) and not self.per_channel_ok:
            raise ConfigError(f"{type(self).__name__}({name}): only per-tensor ranges are supported")
        self.min_val: torch.Tensor | None = None
        self.max_val: torch.Tensor | None = None
        self._shape: tuple[int, ...] | None = None

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float()
        if not torch.isfinite(x).all():
            raise DataError(f"observer of {self.name}: values contain NaN or Inf")
        if x.numel() == 0:
            raise DataError(f"observer of {self.name}: empty tensor")
        return x

    def update(self, x: torch.Tensor) -> None:
        x = self._check(x)
        self._shape = tuple(x.shape)
        rows = _rows(x, self.axis, self.group_size)
        lo, hi = rows.min(dim=1).values, rows.max(dim=1).values
        self._merge(lo, hi)
        self._observe(rows)

    def _merge(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        if self.min_val is None or self.max_val is None:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val, self.max_val = torch.minimum(self.min_val, lo), torch.maximum(self.max_val, hi)

    def _observe(self, rows: torch.Tensor) -> None:
        """Hook for observers that need more than min / max."""

    def _minmax(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.min_val is None or self.max_val is None:
            raise DataError(f"observer of {self.name}: saw no data (empty calibration data?)")
        return self.min_val, self.max_val

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Clipping range, one value per row (tensor / channel / group)."""
        return self._minmax()

    def qparams(self) -> QParams:
        lo, hi = self.bounds()
        if self.group_size is not None:
            assert self._shape is not None
            shape = (*self._shape[:-1], self._shape[-1] // self.group_size)
            lo, hi = lo.reshape(shape), hi.reshape(shape)
        elif self.axis is None:
            lo, hi = lo.reshape(()), hi.reshape(())
        return compute_qparams(
            lo,
            hi,
            self.bits,
            symmetric=self.symmetric,
            signed=self.signed,
            axis=self.axis,
            group_size=self.group_size,
            narrow_range=self.narrow_range,
        )


class MinMaxObserver(Observer):
    """Running minimum and maximum."""


class MovingAverageMinMaxObserver(Observer):
    """Exponential moving average of each batch's min / max (robust to one-off outliers)."""

    def __init__(self, bits: int = 8, *, momentum: float = 0.01, **kw) -> None:
        super().__init__(bits, **kw)
        if not 0.0 < momentum <= 1.0:
            raise ConfigError(f"MovingAverageMinMaxObserver({self.name}): momentum must be in (0, 1], got {momentum}")
        self.momentum = momentum

    def _merge(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        if self.min_val is None or self.max_val is None:
            self.min_val, self.max_val = lo, hi
        else:
            c = self.momentum
            self.min_val = self.min_val + c * (lo - self.min_val)
            self.max_val = self.max_val + c * (hi - self.max_val)


class _SampledObserver(Observer):
    """Keeps a bounded random subsample of the observed values (per row)."""

    def __init__(self, bits: int = 8, *, max_samples: int = 1 << 20, seed: int = 0, **kw) -> None:
        super().__init__(bits, **kw)
        self.max_samples = max_samples
        self._samples: list[torch.Tensor] = []
        self._kept = 0
        self._gen = torch.Generator().manual_seed(seed)

    def _observe(self, rows: torch.Tensor) -> None:
        budget = max(self.max_samples // max(rows.shape[0], 1), 1)
        if rows.shape[1] > budget // 4:  # keep at most a quarter of the budget per batch, uniformly at random
            idx = torch.randint(0, rows.shape[1], (max(budget // 4, 1),), generator=self._gen)
            rows = rows[:, idx]
        self._samples.append(rows)
        self._kept += rows.shape[1]
        if self._kept > budget:  # thin everything out uniformly
            allv = torch.cat(self._samples, dim=1)
            idx = torch.randperm(allv.shape[1], generator=self._gen)[:budget]
            self._samples, self._kept = [allv[:, idx]], budget

    def samples(self) -> torch.Tensor:
        self._minmax()
        return torch.cat(self._samples, dim=1)


class PercentileObserver(_SampledObserver):
    """Clip at ``percentile`` (and ``100 - percentile`` below) of the observed values."""

    def __init__(self, bits: int = 8, *, percentile: float = 99.99, **kw) -> None:
        super().__init__(bits, **kw)
        if not 50.0 < percentile <= 100.0:
            raise ConfigError(f"PercentileObserver({self.name}): percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self._minmax()
        s = self.samples().numpy()
        q_hi = torch.from_numpy(np.percentile(s, self.percentile, axis=1)).float()
        q_lo = torch.from_numpy(np.percentile(s, 100.0 - self.percentile, axis=1)).float()
        return torch.maximum(q_lo, lo), torch.minimum(q_hi, hi)


class MSEObserver(_SampledObserver):
    """Shrink the min-max range by the factor in ``[min_factor, 1]`` with the lowest quantization MSE (per row)."""

    def __init__(self, bits: int = 8, *, steps: int = 60, min_factor: float = 0.2, **kw) -> None:
        super().__init__(bits, **kw)
        self.steps, self.min_factor = steps, min_factor

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self._minmax()
        s = self.samples()
        best_err = torch.full_like(lo, float("inf"))
        best_lo, best_hi = lo.clone(), hi.clone()
        for f in torch.linspace(1.0, self.min_factor, self.steps).tolist():
            qp = compute_qparams(
                lo * f,
                hi * f,
                self.bits,
                symmetric=self.symmetric,
                signed=self.signed,
                axis=0,
                narrow_range=self.narrow_range,
            )
            err = (fake_quantize(s, qp) - s).pow(2).mean(dim=1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lo, best_hi = torch.where(better, lo * f, best_lo), torch.where(better, hi * f, best_hi)
        return best_lo, best_hi


class EntropyObserver(_SampledObserver):
    """KL-divergence calibration (TensorRT): the threshold whose quantized histogram loses least information."""

    per_channel_ok = False

    def __init__(self, bits: int = 8, *, bins: int = 2048, **kw) -> None:
        super().__init__(bits, **kw)
        self.bins = bins

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self._minmax()
        s = self.samples()[0].numpy()
        one_sided = float(lo[0]) >= 0.0
        vals = s if one_sided else np.abs(s)
        top = float(vals.max())
        if top == 0.0:
            return lo, hi
        hist, edges = np.histogram(vals, bins=self.bins, range=(0.0, top))
        levels = 2**self.bits if one_sided else 2 ** (self.bits - 1)
        t = edges[_kl_threshold_bin(hist.astype(np.float64), levels)]
        t_lo = 0.0 if one_sided else -t
        return torch.maximum(torch.tensor([t_lo]), lo), torch.minimum(torch.tensor([t]), hi)


def _kl_threshold_bin(hist: np.ndarray, levels: int) -> int:
    """Bin index (exclusive end) of the clipping threshold with minimal KL(P || Q)."""
    nbins = len(hist)
    if nbins <= levels:
        return nbins
    best, best_i = math.inf, nbins
    for i in range(levels, nbins + 1, max((nbins - levels) // 256, 1)):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        nonzero = hist[:i] > 0
        chunks = np.array_split(np.arange(i), levels)
        q = np.zeros(i)
        for c in chunks:
            nz = nonzero[c]
            if nz.any():
                q[c[nz]] = hist[c].sum() / nz.sum()
        ps, qs = p.sum(), q.sum()
        if ps == 0 or qs == 0:
            continue
        pn, qn = p / ps, q / qs
        mask = pn > 0
        if (qn[mask] == 0).any():
            continue
        kl = float(np.sum(pn[mask] * np.log(pn[mask] / qn[mask])))
        if kl < best:
            best, best_i = kl, i
    return best_i


@lru_cache(maxsize=64)
def aciq_alpha(bits: int, dist: str = "laplace", one_sided: bool = False) -> float:
    """Optimal clip ``alpha`` in units of b (Laplace) or sigma (Gaussian) for a ``bits``-wide grid (Banner et al.).

    Minimises clipping MSE + ``alpha^2 / (3 * 4^bits)`` (uniform rounding noise over ``[-alpha, alpha]``);
    Laplace(b=1): clipping MSE ``2 e^{-alpha}``, e.g. alpha(4 bits) = 5.03. ``one_sided``: the data is the positive
    half of that distribution (density doubled) on a grid over ``[0, alpha]``: the clipping term is the same and the
    step halves, so the optimum is the two-sided one at ``bits + 1`` (the paper's "positive" table, 8 bits: 11.16).
    """
    from scipy.optimize import minimize_scalar
    from scipy.stats import norm

    check_bits(bits, "aciq_alpha.bits")
    rounding = 1.0 / (3.0 * 4.0 ** (bits + int(one_sided)))
    if dist == "laplace":

        def mse(a: float) -> float:
            return 2.0 * math.exp(-a) + a * a * rounding
    elif dist == "gaussian":

        def mse(a: float) -> float:  # 2 * E[(X - a)^2; X > a] for X ~ N(0, 1)
            tail = (a * a + 1.0) * norm.sf(a) - a * norm.pdf(a)
            return 2.0 * tail + a * a * rounding
    else:
        raise ConfigError(f"aciq_alpha: dist must be 'laplace' or 'gaussian', got {dist!r}")
    return float(minimize_scalar(mse, bounds=(0.1, 60.0), method="bounded", options={"xatol": 1e-6}).x)


class ACIQObserver(_SampledObserver):
    """Analytical clipping: fit Laplace (b = mean |x - mu|) or Gaussian (sigma = std) and clip at mu ± alpha.

    One-sided data (all values >= 0, e.g. after ReLU) is clipped to ``[0, alpha]`` with the one-sided alpha, and the
    scale is fitted to the *positive* values only (exponential b = their mean, half-normal sigma = their root mean
    square): zeros sit exactly on the unsigned grid and cost nothing, so counting them would shrink the fitted scale
    with the share of zeros and clip the values a ReLU network relies on (Banner et al.'s code fits b on the whole
    tensor).
    """

    def __init__(self, bits: int = 8, *, dist: str = "laplace", **kw) -> None:
        super().__init__(bits, **kw)
        self.dist = dist
        aciq_alpha(self.bits, dist)  # validate dist early

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self._minmax()
        s = self.samples().double()
        one_sided = lo >= 0
        mu = torch.where(one_sided, torch.zeros_like(s[:, 0]), s.mean(dim=1))
        dev = s - mu[:, None]
        counted = (s > 0) | ~one_sided[:, None]  # one-sided rows: the positive values only
        n = counted.sum(dim=1).clamp(min=1)
        if self.dist == "laplace":
            spread = (dev.abs() * counted).sum(dim=1) / n
        else:
            spread = ((dev.pow(2) * counted).sum(dim=1) / n).sqrt()
        factor = torch.where(
            one_sided, aciq_alpha(self.bits, self.dist, one_sided=True), aciq_alpha(self.bits, self.dist)
        )
        alpha, mu = (factor * spread).float(), mu.float()
        return torch.maximum(mu - alpha, lo), torch.minimum(mu + alpha, hi)


OBSERVERS: dict[str, type[Observer]] = {
    "minmax": MinMaxObserver,
    "moving_average": MovingAverageMinMaxObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
    "entropy": EntropyObserver,
    "aciq_laplace": ACIQObserver,
    "aciq_gaussian": ACIQObserver,
}


def make_observer(kind: str, bits: int = 8, **kw) -> Observer:
    """Build an observer by name (see :data:`OBSERVERS`); extra keywords go to its constructor."""
    if kind not in OBSERVERS:
        raise ConfigError(f"unknown observer {kind!r} (known: {', '.join(OBSERVERS)})")
    if kind.startswith("aciq_"):
        kw.setdefault("dist", kind[5:])
    return OBSERVERS[kind](bits, **kw)


def channel_grid(weight: torch.Tensor, bits: int, observer: str, name: str) -> QParams:
    """The per-output-channel symmetric narrow-range grid of ``weight`` chosen by ``observer`` (how int8_dynamic
    and the gptq stage pick weight grids)."""
    obs = make_observer(observer, bits, symmetric=True, signed=True, axis=0, narrow_range=True, name=f"{name}.weight")
    obs.update(weight.detach())
    return obs.qparams()
