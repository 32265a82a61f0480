"""ONNX Runtime's ``MatMulNBits`` and ``GatherBlockQuantized`` (domain ``com.microsoft``) for int4 weight-only Linears
and Embeddings, emitted by the legacy ``torch.onnx.export`` through ``autograd.Function.symbolic``.

The weight stays at four bits in the file: ``B`` is uint8 ``[N, K / block, block / 2]`` (two codes per byte, low
nibble first, stored offset by 8), ``scales`` is float ``[N, K / block]``, and with no ``zero_points`` input the
grid is symmetric around 8; asymmetric grids pass ``zero_points`` (uint8 ``[N, ceil(K / block / 2)]``, two per
byte, low nibble first: the code that stands for 0 in each block). ``accuracy_level`` chooses the arithmetic ONNX
Runtime may use: 0 computes in float on the unpacked weights; 4 quantizes each block of the input to int8 at run
time and multiplies with integer instructions (AVX-512 VNNI / AVX-VNNI / AMX where the CPU has them).
"""

from __future__ import annotations

import torch

from shrink.quant.onnx.ops import no_bias


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 (..., n) with two codes per byte (low nibble first, offset by 8) -> int8 codes (..., 2n)."""
    lo = (packed & 0x0F).to(torch.int8) - 8
    hi = (packed >> 4).to(torch.int8) - 8
    return torch.stack((lo, hi), dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)


__all__ = ["unpack_int4", "MatMulNBitsFunction", "GatherBlockQuantizedFunction", "ACCURACY_LEVELS"]

#: ``accuracy_level`` by shrink's name for it
ACCURACY_LEVELS = {"float": 0, "int8": 4}


class MatMulNBitsFunction(torch.autograd.Function):
    """``y = x @ W^T (+ bias)`` with ``W`` the codes in ``packed`` times ``scales`` (float ``[N, K / block]``);
    exports as ``MatMulNBits`` (then ``Add`` for the bias). ``bits=4``: ``packed`` is uint8 ``[N, K / block,
    block / 2]``, two codes per byte, offset by 8; ``bits=8``: uint8 ``[N, K / block, block]``, one code per byte,
    offset by 128 (ONNX Runtime's default zero points for each width). ``zero_points`` (4 bits only): uint8
    ``[N, ceil(K / block / 2)]``, each block's zero point (0..15) two per byte; None: 8 for every block."""

    @staticmethod
    def forward(ctx, x, packed, scales, bias, accuracy_level: int, bits: int = 4, zero_points=None):  # noqa: ANN001, ANN205
        codes = unpack_int4(packed) if bits == 4 else packed.to(torch.int16) - 128
        if zero_points is not None:  # both unpacked relative to 8: (u - 8) - (zero - 8) = u - zero
            codes = codes.float() - unpack_int4(zero_points)[:, : packed.shape[1], None].float()
        weight = (codes.float() * scales.float()[..., None]).reshape(packed.shape[0], -1)
        y = x @ weight.T.to(x.dtype)
        return y if bias is None else y + bias

    @staticmethod
    def symbolic(g, x, packed, scales, bias, accuracy_level: int, bits: int = 4, zero_points=None):  # noqa: ANN001, ANN205
        n, blocks, width = packed.type().sizes()
        block = width * 8 // bits
        zero = [] if zero_points is None or no_bias(zero_points) else [zero_points]
        y = g.op(
            "com.microsoft::MatMulNBits",
            x,
            packed,
            scales,
            *zero,
            K_i=blocks * block,
            N_i=n,
            bits_i=bits,
            block_size_i=block,
            accuracy_level_i=accuracy_level,
        )
        sizes = x.type().varyingSizes()  # the output's type for the exporter's shape inference: x's, N columns
        if sizes is not None:
            y.setType(x.type().with_sizes([*sizes[:-1], n]))
        return y if no_bias(bias) else g.op("Add", y, bias)


class GatherBlockQuantizedFunction(torch.autograd.Function):
    """Rows ``ids`` of an int4 table (``packed``: uint8 ``[rows, cols / 2]``, two codes per byte, offset by 8) times
    its group ``scales`` (float ``[rows, cols / group]``); exports as ONNX Runtime's ``GatherBlockQuantized``."""

    @staticmethod
    def forward(ctx, ids, packed, scales):  # noqa: ANN001, ANN205
        codes = unpack_int4(packed[ids]).reshape(*ids.shape, scales.shape[1], -1)
        return (codes.float() * scales[ids].float()[..., None]).reshape(*ids.shape, -1)

    @staticmethod
    def symbolic(g, ids, packed, scales):  # noqa: ANN001, ANN205
        rows, half = packed.type().sizes()
        groups = scales.type().sizes()[1]
        out = g.op(
            "com.microsoft::GatherBlockQuantized",
            packed,
            ids,
            scales,
            gather_axis_i=0,
            quantize_axis_i=1,
            block_size_i=half * 2 // groups,
            bits_i=4,
        )
        return out
