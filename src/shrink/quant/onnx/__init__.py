"""ONNX graphs of quantized layers and the check of what ONNX Runtime really runs.

``ops`` holds the symbolic functions that emit QLinear / QDQ / integer MatMul graphs when a quantized layer is
exported, ``nbits`` the ``com.microsoft`` int4 ops (MatMulNBits, GatherBlockQuantized) and ``export`` the export of
a whole quantized model with the list of integer kernels ONNX Runtime chose. Layers call into this package when they
are exported, so it imports only :mod:`shrink.quant.numerics` (and onnx / onnxruntime), never the layers.
"""
