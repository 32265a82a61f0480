"""Quantized layers: the modules that replace float ones and the conversion that installs them.

Integer-weight Linear / Conv2d with fake-quantized activations (``modules``), QAT layers with learned step sizes
(``qat_modules``), binary layers, packed int8 / int4 weights with group scales (``packed``) and the bit-packed
mixed-precision layers (``lowbit``); ``convert`` selects layers and swaps them in. Every layer can be saved by
:func:`shrink.save` at its own bit width. This package imports :mod:`shrink.quant.numerics`,
:mod:`shrink.quant.algorithms` and :mod:`shrink.quant.onnx` (for its export), never the runtimes or the stages.
"""
