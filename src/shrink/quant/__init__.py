"""Quantization: qparams math, observers, static / dynamic / weight-only PTQ, packed integer weights, ONNX QDQ."""

from shrink.quant.observers import (
    OBSERVERS,
    ACIQObserver,
    EntropyObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
    aciq_alpha,
    make_observer,
)
from shrink.quant.qparams import (
    SUPPORTED_BITS,
    QParams,
    check_bits,
    compute_qparams,
    dequantize,
    fake_quantize,
    qparams_for_tensor,
    qrange,
    quantize,
    storage_dtype,
)

__all__ = [
    "QParams", "SUPPORTED_BITS", "check_bits", "qrange", "compute_qparams", "qparams_for_tensor", "quantize",
    "dequantize", "fake_quantize", "storage_dtype",
    "Observer", "MinMaxObserver", "MovingAverageMinMaxObserver", "PercentileObserver", "MSEObserver",
    "EntropyObserver", "ACIQObserver", "OBSERVERS", "make_observer", "aciq_alpha",
]
