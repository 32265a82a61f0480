"""ONNX graphs of shrink's quantized layers, emitted by ``torch.onnx.export`` (legacy exporter) through
``autograd.Function.symbolic``: int8 weight initializers with shrink's own scales / zero points, and

* static activations: ``QuantizeLinear -> DequantizeLinear`` on inputs (and outputs), so ONNX Runtime's QDQ
  transformer turns the pattern into ``QLinearConv`` / ``QLinearMatMul`` / ``MatMulIntegerToFloat``;
* dynamic activations: ``DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul -> Add`` (fused by ONNX Runtime
  into ``DynamicQuantizeMatMul``).

``forward`` of each function is only a placeholder with the right shape for tracing; the eager (simulated) path is
in :mod:`shrink.quant.layers.modules`.
"""

from __future__ import annotations

import torch

__all__ = ["qdq", "StaticQLinear", "DynamicQLinear", "StaticQConv", "weight_codes", "no_bias"]

_ONNX_FLOAT = 1


def no_bias(bias) -> bool:  # noqa: ANN001
    """A missing bias reaches a symbolic as None or as a None-valued graph input, depending on the call."""
    return bias is None or bias.node().mustBeNone()


def _const(g, t: torch.Tensor):  # noqa: ANN001, ANN202
    return g.op("Constant", value_t=t)


def _qdq_act(g, x, scale: float, zp: int, signed: bool):  # noqa: ANN001, ANN202
    s = _const(g, torch.tensor(scale, dtype=torch.float32))
    z = _const(g, torch.tensor(zp, dtype=torch.int8 if signed else torch.uint8))
    return g.op("DequantizeLinear", g.op("QuantizeLinear", x, s, z), s, z)


def _weight_zp(g, w_scale, unsigned: bool):  # noqa: ANN001, ANN202
    n = w_scale.type().sizes()[0]
    return _const(g, torch.full((n,), 128, dtype=torch.uint8) if unsigned else torch.zeros(n, dtype=torch.int8))


def _dq_weight(g, wq, w_scale, axis: int, unsigned: bool):  # noqa: ANN001, ANN202
    return g.op("DequantizeLinear", wq, w_scale, _weight_zp(g, w_scale, unsigned), axis_i=axis)


def weight_codes(weight_int: torch.Tensor, unsigned: bool) -> torch.Tensor:
    """Codes as stored in the ONNX file: int8, or uint8 offset by 128 (for CPUs whose u8 x s8 kernels saturate)."""
    return (weight_int.to(torch.int16) + 128).to(torch.uint8) if unsigned else weight_int


class QDQ(torch.autograd.Function):
    """Fake-quantize an activation with fixed qparams; exports as QuantizeLinear -> DequantizeLinear."""

    @staticmethod
    def forward(ctx, x, scale: float, zp: int, qmin: int, qmax: int, signed: bool):  # noqa: ANN001, ANN205
        return torch.fake_quantize_per_tensor_affine(x, scale, zp, qmin, qmax)

    @staticmethod
    def symbolic(g, x, scale: float, zp: int, qmin: int, qmax: int, signed: bool):  # noqa: ANN001, ANN205
        return _qdq_act(g, x, scale, zp, signed)


def qdq(x: torch.Tensor, scale: float, zp: int, qmin: int, qmax: int, signed: bool) -> torch.Tensor:
    return QDQ.apply(x, scale, zp, qmin, qmax, signed)


class StaticQLinear(torch.autograd.Function):
    """y = dq(w_int8^T) applied to x (already QDQ'd by the caller): DequantizeLinear(axis=1) -> MatMul -> Add."""

    @staticmethod
    def forward(ctx, x, wq_t, w_scale, bias, unsigned: bool):  # noqa: ANN001, ANN205
        y = x @ (wq_t.float() * w_scale)
        return y + bias if bias is not None else y

    @staticmethod
    def symbolic(g, x, wq_t, w_scale, bias, unsigned: bool):  # noqa: ANN001, ANN205
        y = g.op("MatMul", x, _dq_weight(g, wq_t, w_scale, axis=1, unsigned=unsigned))
        return y if no_bias(bias) else g.op("Add", y, bias)


class DynamicQLinear(torch.autograd.Function):
    """Per-batch u8 activation quantization and an integer matmul with per-column int8 weight scales."""

    @staticmethod
    def forward(ctx, x, wq_t, w_scale, bias, unsigned: bool):  # noqa: ANN001, ANN205
        y = x @ (wq_t.float() * w_scale)
        return y + bias if bias is not None else y

    @staticmethod
    def symbolic(g, x, wq_t, w_scale, bias, unsigned: bool):  # noqa: ANN001, ANN205
        xq, xs, xzp = g.op("DynamicQuantizeLinear", x, outputs=3)
        wzp = _weight_zp(g, w_scale, unsigned)
        acc = g.op("Cast", g.op("MatMulInteger", xq, wq_t, xzp, wzp), to_i=_ONNX_FLOAT)
        y = g.op("Mul", acc, g.op("Mul", xs, w_scale))
        return y if no_bias(bias) else g.op("Add", y, bias)


class StaticQConv(torch.autograd.Function):
    """Conv with DequantizeLinear(int8 weight, per-output-channel scales) on the weight input."""

    @staticmethod
    def forward(ctx, x, wq, w_scale, bias, stride, padding, dilation, groups, unsigned: bool):  # noqa: ANN001, ANN205
        w = wq.float() * w_scale.reshape(-1, 1, 1, 1)
        return torch.nn.functional.conv2d(x, w, bias, stride, padding, dilation, groups)

    @staticmethod
    def symbolic(g, x, wq, w_scale, bias, stride, padding, dilation, groups, unsigned: bool):  # noqa: ANN001, ANN205
        w = _dq_weight(g, wq, w_scale, axis=0, unsigned=unsigned)
        args = [x, w] if no_bias(bias) else [x, w, bias]
        k = wq.type().sizes()[2:]
        return g.op(
            "Conv",
            *args,
            kernel_shape_i=list(k),
            strides_i=list(stride),
            pads_i=list(padding) * 2,
            dilations_i=list(dilation),
            group_i=groups,
        )


class TokenQLinear(torch.autograd.Function):
    """Per-token (per-row) dynamic u8 activations: each row is mapped onto 256 steps between its own minimum and
    maximum, ``q = round((x - lo) * (1 / s))``, computed in the graph (ReduceMin / ReduceMax; the rounding and
    saturation to uint8 by a unit-scale ``QuantizeLinear``, which is vectorised). The integer product runs in
    ONNX Runtime's fused ``MatMulIntegerToFloat`` (int accumulation, per-column weight scales in the epilogue); the
    row offset ``lo`` comes back exactly through the weight column sums: ``y = s (q W) + lo colsum(W) + b``.
    Fewer graph nodes than an integer zero point per row (no Min/Max with 0, no Neg / Clip / zero-point subtract),
    which matters at batch 1 where per-node overhead dominates; ``lo colsum(W)`` is one outer-product ``MatMul``."""

    @staticmethod
    def forward(ctx, x, wq_t, w_scale, bias, colsum, unsigned: bool):  # noqa: ANN001, ANN205
        y = x @ (wq_t.float() * w_scale)
        return y + bias if bias is not None else y

    @staticmethod
    def symbolic(g, x, wq_t, w_scale, bias, colsum, unsigned: bool):  # noqa: ANN001, ANN205
        lo = g.op("ReduceMin", x, axes_i=[-1], keepdims_i=1)
        hi = g.op("ReduceMax", x, axes_i=[-1], keepdims_i=1)
        step = g.op("Mul", g.op("Sub", hi, lo), _const(g, torch.tensor(1.0 / 255.0)))
        scale = g.op("Max", step, _const(g, torch.tensor(1e-12)))
        # QuantizeLinear with a unit scale: vectorised rounding (half to even) and saturation into uint8
        unit = g.op("Mul", g.op("Sub", x, lo), g.op("Reciprocal", scale))
        q8 = g.op("QuantizeLinear", unit, _const(g, torch.tensor(1.0)), _const(g, torch.tensor(0, dtype=torch.uint8)))
        f = g.op(
            "com.microsoft::MatMulIntegerToFloat",
            q8,
            wq_t,
            _const(g, torch.tensor(1.0)),
            w_scale,
            _const(g, torch.tensor(0, dtype=torch.uint8)),
            _weight_zp(g, w_scale, unsigned),
        )
        # the row offsets times the weight column sums ([1, N]): one outer product, MatMul [.., 1] x [1, N]
        y = g.op("Add", g.op("Mul", f, scale), g.op("MatMul", lo, colsum))
        return y if no_bias(bias) else g.op("Add", y, bias)


__all__.append("TokenQLinear")
