"""The integer operations of :mod:`shrink.quant.runtimes.intonly`: int8/uint8 activations in, int32 accumulation,
fixed-point requantization out. Every function takes and returns integer numpy arrays; none computes in float.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from shrink.quant.numerics.fixedpoint import multiply_by_quantized_multiplier, requantize

__all__ = [
    "Grid",
    "IntLayer",
    "int_conv2d",
    "int_linear",
    "int_max_pool2d",
    "int_avg_pool2d",
    "int_add",
    "int_regrid",
    "ADD_LEFT_SHIFT",
]

#: headroom shift applied to both addends before rescaling (TFLite's quantized ADD uses 20)
ADD_LEFT_SHIFT = 20


@dataclass(frozen=True)
class Grid:
    """An activation grid: real value ``(q - zero_point) * scale`` for integer ``q`` in ``[qmin, qmax]``.

    ``scale`` is only used offline, to derive fixed-point multipliers while the integer model is built."""

    scale: float
    zero_point: int
    qmin: int
    qmax: int

    def same_as(self, other: Grid) -> bool:
        return (self.zero_point, self.qmin, self.qmax) == (other.zero_point, other.qmin, other.qmax) and (
            abs(self.scale - other.scale) <= 1e-7 * max(abs(self.scale), abs(other.scale))
        )


@dataclass
class IntLayer:
    """A conv / linear layer in integer form: int32 weights (int8 values), int32 bias in units of
    ``s_in · s_w[c]``, per-output-channel fixed-point multipliers ``(m0, shift)`` for ``s_in · s_w[c] / s_out``.

    ``out`` is None for a final layer whose int32 accumulators are the result (real value ``acc · acc_scale[c]``).
    """

    kind: str  # "conv" | "linear"
    weight: np.ndarray  # int32, values of the int8 grid
    bias: np.ndarray  # int32
    input_zero_point: int
    m0: np.ndarray  # int64 holding int32 values
    shift: np.ndarray  # int64
    out: Grid | None
    relu: bool
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1


def _check_int(x: np.ndarray, where: str) -> None:
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{where}: integer-only path got a {x.dtype} array")


def _accumulate_conv(x: np.ndarray, layer: IntLayer) -> np.ndarray:
    """int32 accumulators of a 2-d convolution of ``x - zp_in`` (zero padding = the real value 0)."""
    xs = x.astype(np.int32) - np.int32(layer.input_zero_point)
    ph, pw = layer.padding
    xs = np.pad(xs, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out_c, in_c_g, kh, kw = layer.weight.shape
    dh, dw = layer.dilation
    sh, sw = layer.stride
    win = sliding_window_view(xs, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]  # (N, C, Ho, Wo, kh, kw)
    n, _, ho, wo = win.shape[:4]
    g = layer.groups
    out_g = out_c // g
    acc = np.empty((n, ho, wo, out_c), dtype=np.int32)
    for gi in range(g):
        cols = win[:, gi * in_c_g : (gi + 1) * in_c_g].transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, -1)
        w = layer.weight[gi * out_g : (gi + 1) * out_g].reshape(out_g, -1)
        acc[..., gi * out_g : (gi + 1) * out_g] = (cols @ w.T).reshape(n, ho, wo, out_g)
    return acc.transpose(0, 3, 1, 2) + layer.bias.reshape(1, -1, 1, 1)


def _finish(acc: np.ndarray, layer: IntLayer, channel_axis: int) -> np.ndarray:
    if layer.out is None:
        return acc.astype(np.int32)
    shape = [1] * acc.ndim
    shape[channel_axis] = -1
    qmin = max(layer.out.qmin, layer.out.zero_point) if layer.relu else layer.out.qmin
    return requantize(
        acc.astype(np.int32),
        layer.m0.reshape(shape),
        layer.shift.reshape(shape),
        layer.out.zero_point,
        qmin,
        layer.out.qmax,
    )


def int_conv2d(x: np.ndarray, layer: IntLayer) -> np.ndarray:
    """Quantized Conv2d (+ fused ReLU): integer input codes -> output codes (or int32 accumulators)."""
    _check_int(x, "int_conv2d")
    return _finish(_accumulate_conv(x, layer), layer, channel_axis=1)


def int_linear(x: np.ndarray, layer: IntLayer) -> np.ndarray:
    """Quantized Linear (+ fused ReLU) over the last axis."""
    _check_int(x, "int_linear")
    xs = x.astype(np.int32) - np.int32(layer.input_zero_point)
    acc = xs @ layer.weight.T + layer.bias
    return _finish(acc, layer, channel_axis=acc.ndim - 1)


def int_max_pool2d(
    x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> np.ndarray:
    """Max pooling on integer codes (exact: quantization is monotone, so it commutes with max)."""
    _check_int(x, "int_max_pool2d")
    if padding != (0, 0):
        info = np.iinfo(x.dtype)
        x = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2), constant_values=info.min)
    win = sliding_window_view(x, kernel, axis=(2, 3))[:, :, :: stride[0], :: stride[1]]
    return win.max(axis=(-2, -1))


def int_avg_pool2d(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """Average pooling on codes of one grid (the grid is unchanged): integer sum, rounded division."""
    _check_int(x, "int_avg_pool2d")
    win = sliding_window_view(x.astype(np.int32), kernel, axis=(2, 3))[:, :, :: stride[0], :: stride[1]]
    total = win.sum(axis=(-2, -1), dtype=np.int32)
    n = np.int32(kernel[0] * kernel[1])
    # round half away from zero: (2·sum ± n) // (2n), done on magnitudes
    mag = (2 * np.abs(total) + n) // (2 * n)
    return (np.sign(total) * mag).astype(np.int32)


def int_regrid(x: np.ndarray, src: Grid, m0: int, shift: int, dst: Grid, relu: bool = False) -> np.ndarray:
    """Move codes from grid ``src`` to grid ``dst`` (multiplier ``src.scale / dst.scale`` as ``m0, shift``)."""
    _check_int(x, "int_regrid")
    centred = x.astype(np.int32) - np.int32(src.zero_point)
    qmin = max(dst.qmin, dst.zero_point) if relu else dst.qmin
    return requantize(centred, m0, shift, dst.zero_point, qmin, dst.qmax)


def int_add(
    a: np.ndarray,
    b: np.ndarray,
    za: int,
    zb: int,
    ma: tuple[int, int],
    mb: tuple[int, int],
    mo: tuple[int, int],
    out: Grid,
    relu: bool = False,
) -> np.ndarray:
    """TFLite-style quantized add: both addends shifted left by :data:`ADD_LEFT_SHIFT`, rescaled to a common
    scale ``2·max(s_a, s_b)``, summed in int32 and requantized to ``out``."""
    _check_int(a, "int_add")
    _check_int(b, "int_add")
    sa = (a.astype(np.int32) - np.int32(za)) << np.int32(ADD_LEFT_SHIFT)
    sb = (b.astype(np.int32) - np.int32(zb)) << np.int32(ADD_LEFT_SHIFT)
    total = multiply_by_quantized_multiplier(sa, *ma) + multiply_by_quantized_multiplier(sb, *mb)
    qmin = max(out.qmin, out.zero_point) if relu else out.qmin
    return requantize(total.astype(np.int32), mo[0], mo[1], out.zero_point, qmin, out.qmax)
