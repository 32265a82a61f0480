"""Quantization numerics: the integer grid and its arithmetic, nothing else.

``qparams`` (scale / zero point of a grid, quantize, dequantize, fake-quantize, dynamic fake-quant), ``ste``
(fake quantization with the straight-through gradient) and ``fixedpoint`` (requantization with integer multipliers
and shifts, as integer-only hardware does it). These modules import only torch and :mod:`shrink.errors`; every
other part of :mod:`shrink.quant` builds on them.
"""
