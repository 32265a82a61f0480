"""Quantization algorithms: how ranges, rounding and scales are chosen.

Observers and calibration (min-max, percentile, MSE, entropy, ACIQ), BatchNorm folding, GPTQ error-feedback
rounding, group-wise rounding with AWQ input scaling, SmoothQuant, LSQ step sizes and ZeroQ's distilled data.
They produce numbers (ranges, codes, scales, folded weights), never quantized layers, and import only
:mod:`shrink.quant.numerics` (and the package's bottom modules: errors, data, select).
"""
