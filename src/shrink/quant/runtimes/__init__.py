"""Real integer execution of quantized models.

PyTorch's int8 CPU kernels (``torch_backend``: oneDNN / fbgemm quantized ops with shrink's own scales;
``torch_token``: per-token int8 Linears and the Inductor-compiled int8 model; ``torch_package``: that model
compiled ahead of time into an AOTInductor package) and the integer-only executor
(``intonly`` / ``intonly_ops``: int8 codes in, int32 accumulation, fixed-point requantization, as an integer NPU
computes). Runtimes read quantized layers, so they import :mod:`shrink.quant.layers` and below; the stages import
them, never the other way round.
"""
