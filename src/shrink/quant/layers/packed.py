"""Packed integer weight storage: int8 or int4 (two codes per byte) with group-wise scales, as real tensors that
:func:`shrink.save` writes at their packed size.

``pack_int4`` / ``unpack_int4`` store signed 4-bit codes offset by 8 (``0..15``), low nibble first — the layout of ONNX
Runtime's ``MatMulNBits`` blocks. An asymmetric int4 weight also keeps one zero point per group, packed the same way
(``MatMulNBits``' ``zero_points`` input), and each weight is ``(code - zero) * scale``. :class:`PackedLinear` and
:class:`PackedEmbedding` keep weights packed and dequantize on the fly (weight-only quantization: compute stays in
float).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shrink.errors import ConfigError
from shrink.export.artifact import register_layer
from shrink.quant.algorithms.group_rounding import SCALE_DTYPE, dequantize_groups
from shrink.quant.numerics.qparams import QParams, dequantize, qparams_for_tensor, quantize
from shrink.quant.onnx.nbits import ACCURACY_LEVELS, GatherBlockQuantizedFunction, MatMulNBitsFunction, unpack_int4

__all__ = [
    "pack_int4",
    "pack_zero_points",
    "unpack_int4",
    "PackedWeight",
    "PackedLinear",
    "PackedEmbedding",
    "SCALE_DTYPE",
]


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Signed 4-bit codes (int8 tensor in [-8, 7], even last dim) → uint8 with two codes per byte."""
    if q.shape[-1] % 2:
        raise ConfigError(f"pack_int4: last dim {q.shape[-1]} must be even")
    if q.numel() and (q.min() < -8 or q.max() > 7):
        raise ConfigError("pack_int4: codes outside the int4 range [-8, 7]")
    u = (q.to(torch.int16) + 8).to(torch.uint8)
    return u[..., 0::2] | (u[..., 1::2] << 4)


def pack_zero_points(zeros: torch.Tensor) -> torch.Tensor:
    """Integer zero points ``[rows, groups]`` (in the int4 codes' range) -> uint8 ``[rows, ceil(groups / 2)]``, two
    per byte as ``MatMulNBits`` reads them; an odd count gets a pad nibble (zero point 0) that nothing reads."""
    zeros = zeros.to(torch.int8)
    if zeros.shape[1] % 2:
        zeros = torch.cat([zeros, zeros.new_zeros(zeros.shape[0], 1)], 1)
    return pack_int4(zeros)


class PackedWeight(nn.Module):
    """A 2-D weight (rows, cols) as int8 / packed int4 codes with one fp16 scale per ``group_size`` columns and, when
    ``asymmetric`` (int4 only), one zero point per group (packed two per byte like the codes: ``zeros``)."""

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None

    def __init__(self, rows: int, cols: int, bits: int, group_size: int, asymmetric: bool = False) -> None:
        super().__init__()
        if bits not in (4, 8):
            raise ConfigError(f"packed weights support 4 or 8 bits, got {bits}")
        if cols % group_size:
            raise ConfigError(f"group_size {group_size} does not divide the input dim {cols}")
        if asymmetric and bits != 4:
            raise ConfigError(f"packed weights have zero points on int4 grids only, got bits={bits}")
        self.rows, self.cols, self.bits, self.group_size = rows, cols, bits, group_size
        width, groups = (cols // 2 if bits == 4 else cols), cols // group_size
        self.register_buffer("codes", torch.zeros(rows, width, dtype=torch.uint8 if bits == 4 else torch.int8))
        self.register_buffer("scales", torch.ones(rows, groups, dtype=SCALE_DTYPE))
        # zero point 0 for every group (8 in both nibbles once offset); an odd group count gets a pad nibble
        zeros = torch.full((rows, (groups + 1) // 2), 0x88, dtype=torch.uint8) if asymmetric else None
        self.register_buffer("zeros", zeros)

    @property
    def asymmetric(self) -> bool:
        return self.zeros is not None

    def qparams(self) -> QParams:
        if self.zeros is not None:
            raise ConfigError("PackedWeight.qparams: an asymmetric grid has group zero points; use dequantize()")
        scale = self.scales.float()
        return QParams(scale, torch.zeros_like(scale, dtype=torch.int32), self.bits, True, None, self.group_size, True)

    @torch.no_grad()
    def set(self, weight: torch.Tensor) -> None:
        if self.zeros is not None:
            raise ConfigError("PackedWeight.set rounds onto a symmetric grid; give asymmetric codes to set_codes")
        qp = qparams_for_tensor(
            weight.float(), self.bits, symmetric=True, group_size=self.group_size, narrow_range=True
        )
        qp = QParams(qp.scale.half().float(), qp.zero_point, qp.bits, True, None, self.group_size, True)
        q = quantize(weight.float(), qp)
        self.codes.copy_(pack_int4(q) if self.bits == 4 else q)
        self.scales.copy_(qp.scale.half())

    @torch.no_grad()
    def set_codes(self, codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None = None) -> None:
        """Store integer ``codes`` [rows, cols] (signed, within the bit width), ``scales`` [rows, cols / group] and,
        on an asymmetric grid, the integer ``zeros`` [rows, cols / group] (in the codes' range) rounded elsewhere
        (GPTQ, AWQ, SignRound); the scales are kept in fp16, as :meth:`set` keeps them."""
        if tuple(codes.shape) != (self.rows, self.cols) or tuple(scales.shape) != tuple(self.scales.shape):
            raise ConfigError(
                f"PackedWeight.set_codes: codes {tuple(codes.shape)} / scales {tuple(scales.shape)} do not fit "
                f"a ({self.rows}, {self.cols}) weight with group {self.group_size}"
            )
        if (zeros is None) != (self.zeros is None):
            need = "needs zero points" if self.zeros is not None else "is symmetric and takes no zero points"
            raise ConfigError(f"PackedWeight.set_codes: this weight {need}")
        codes = codes.to(torch.int8)
        self.codes.copy_(pack_int4(codes) if self.bits == 4 else codes)
        self.scales.copy_(scales.half())
        if zeros is not None and self.zeros is not None:
            if tuple(zeros.shape) != tuple(scales.shape) or not torch.equal(zeros, zeros.round()):
                raise ConfigError(
                    f"PackedWeight.set_codes: zeros must be integers shaped like the scales {tuple(scales.shape)}, "
                    f"got {tuple(zeros.shape)}"
                )
            self.zeros.copy_(pack_zero_points(zeros))

    def zero_points(self) -> torch.Tensor | None:
        """The integer zero points [rows, cols / group] (int8, in the codes' range), or None on a symmetric grid."""
        if self.zeros is None:
            return None
        return unpack_int4(self.zeros)[:, : self.scales.shape[1]]

    def int_codes(self) -> torch.Tensor:
        return unpack_int4(self.codes) if self.bits == 4 else self.codes

    def dequantize(self) -> torch.Tensor:
        zeros = self.zero_points()
        if zeros is not None:
            return dequantize_groups(self.int_codes(), self.scales.float(), zeros.float())
        return dequantize(self.int_codes(), self.qparams())

    def shrink_manifest(self) -> dict:
        manifest = {"rows": self.rows, "cols": self.cols, "bits": self.bits, "group_size": self.group_size}
        return {**manifest, "asymmetric": True} if self.asymmetric else manifest

    @classmethod
    def shrink_from_manifest(cls, args: dict) -> PackedWeight:
        return cls(**args)

    def shrink_param_count(self) -> tuple[int, int]:
        return self.rows * self.cols, int(torch.count_nonzero(self.int_codes()))


def _check_onnx_block(group: int, kernel: str) -> None:
    """ONNX Runtime's int4 kernels read blocks of a power-of-two size of at least 16 inputs."""
    if group < 16 or group & (group - 1):
        raise ConfigError(
            f"int4 ONNX export: {kernel} needs groups of a power of two of at least 16 inputs, and this layer has "
            f"one scale per {group}; quantize it with weight_only group_size 32, 64 or 128"
        )


@register_layer
class PackedLinear(nn.Module):
    """Weight-only quantized Linear: packed weight, float bias, float compute on the dequantized weight in PyTorch.

    ``input_scale`` (activation-aware scaling, AWQ) multiplies the input channel-wise before the matmul when set.
    In ONNX an int4 layer is ONNX Runtime's ``MatMulNBits`` (:mod:`shrink.quant.onnx.nbits`) with the
    ``onnx_compute`` arithmetic ("float" or "int8" activations), an asymmetric grid's zero points passed as its
    ``zero_points``; int8 layers are exported as float weights (the exporter folds their dequantization), so only
    int4 keeps the ONNX file small.
    """

    input_scale: torch.Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        bits: int = 4,
        group_size: int = 32,
        input_scaled: bool = False,
        onnx_compute: str = "int8",
        asymmetric: bool = False,
    ) -> None:
        super().__init__()
        if onnx_compute not in ACCURACY_LEVELS:
            raise ConfigError(
                f"PackedLinear: onnx_compute must be one of {sorted(ACCURACY_LEVELS)}, got {onnx_compute!r}"
            )
        self.in_features, self.out_features, self.onnx_compute = in_features, out_features, onnx_compute
        self.packed = PackedWeight(out_features, in_features, bits, group_size, asymmetric)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.register_buffer("input_scale", torch.ones(in_features) if input_scaled else None)

    @classmethod
    def from_float(cls, layer: nn.Linear, bits: int, group_size: int) -> PackedLinear:
        q = cls(layer.in_features, layer.out_features, layer.bias is not None, bits, group_size)
        q.packed.set(layer.weight.detach())
        if layer.bias is not None:
            assert q.bias is not None  # built with bias=True just above
            q.bias.data.copy_(layer.bias.detach())
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale is not None:
            x = x * self.input_scale.to(x.dtype)
        p = self.packed
        if p.bits == 4 and torch.onnx.is_in_onnx_export():
            _check_onnx_block(p.group_size, "MatMulNBits")
            blocks = p.codes.reshape(p.rows, p.cols // p.group_size, p.group_size // 2)
            level = ACCURACY_LEVELS[self.onnx_compute]
            return MatMulNBitsFunction.apply(x, blocks, p.scales.float(), self.bias, level, 4, p.zeros)
        return F.linear(x, p.dequantize().to(x.dtype), self.bias)

    def shrink_manifest(self) -> dict:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
            "bits": self.packed.bits,
            "group_size": self.packed.group_size,
            "input_scaled": self.input_scale is not None,
            "onnx_compute": self.onnx_compute,
            **({"asymmetric": True} if self.packed.asymmetric else {}),
        }

    @classmethod
    def shrink_from_manifest(cls, args: dict) -> PackedLinear:
        return cls(**args)

    def shrink_param_count(self) -> tuple[int, int]:
        n, nz = self.packed.shrink_param_count()
        if self.bias is not None:
            n, nz = n + self.bias.numel(), nz + int(torch.count_nonzero(self.bias))
        return n, nz


@register_layer
class PackedEmbedding(nn.Module):
    """Weight-only quantized Embedding: rows looked up in the packed table and dequantized."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        bits: int = 8,
        group_size: int = 32,
        padding_idx: int | None = None,
    ) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.packed = PackedWeight(num_embeddings, embedding_dim, bits, group_size)

    @classmethod
    def from_float(cls, layer: nn.Embedding, bits: int, group_size: int) -> PackedEmbedding:
        q = cls(layer.num_embeddings, layer.embedding_dim, bits, group_size, layer.padding_idx)
        q.packed.set(layer.weight.detach())
        return q

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # gather rows first, then dequantize only them (ONNX: Gather -> Cast -> Mul on the int8 table)
        p = self.packed
        if p.bits == 4 and torch.onnx.is_in_onnx_export():
            _check_onnx_block(p.group_size, "GatherBlockQuantized")
            return GatherBlockQuantizedFunction.apply(ids, p.codes, p.scales.float())
        codes = p.codes[ids]
        codes = unpack_int4(codes) if p.bits == 4 else codes
        groups = self.embedding_dim // p.group_size
        grouped = codes.float().reshape(*ids.shape, groups, p.group_size)
        return (grouped * p.scales[ids].float().unsqueeze(-1)).reshape(*ids.shape, self.embedding_dim)

    def shrink_manifest(self) -> dict:
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "bits": self.packed.bits,
            "group_size": self.packed.group_size,
            "padding_idx": self.padding_idx,
        }

    @classmethod
    def shrink_from_manifest(cls, args: dict) -> PackedEmbedding:
        return cls(**args)

    def shrink_param_count(self) -> tuple[int, int]:
        return self.packed.shrink_param_count()


register_layer(PackedWeight)
