"""Quantization: qparams math, observers, static / dynamic / weight-only PTQ, packed integer weights, ONNX QDQ."""

from shrink.quant.algorithms.calibrate import calibrating, run_calibration
from shrink.quant.algorithms.observers import (
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
from shrink.quant.awq import AWQ
from shrink.quant.conv1d import linear_from_conv1d
from shrink.quant.dynamic import Int8Dynamic
from shrink.quant.gptq_rounding import GPTQ
from shrink.quant.layers.modules import QuantConv2d, QuantLinear
from shrink.quant.layers.packed import PackedEmbedding, PackedLinear, pack_int4, unpack_int4
from shrink.quant.layers.prepared import PreparedLinear
from shrink.quant.numerics.qparams import (
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
from shrink.quant.onnx.export import INTEGER_OPS, ort_optimized_ops
from shrink.quant.signround import SignRound
from shrink.quant.smoothquant import SmoothQuant
from shrink.quant.static import Int8Static, correct_bias, quantize_static
from shrink.quant.weight_only import FloatCast, WeightOnly

__all__ = [
    "linear_from_conv1d",
    "AWQ",
    "QParams",
    "SUPPORTED_BITS",
    "check_bits",
    "qrange",
    "compute_qparams",
    "qparams_for_tensor",
    "quantize",
    "dequantize",
    "fake_quantize",
    "storage_dtype",
    "Observer",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "PercentileObserver",
    "MSEObserver",
    "EntropyObserver",
    "ACIQObserver",
    "OBSERVERS",
    "make_observer",
    "aciq_alpha",
    "calibrating",
    "run_calibration",
    "QuantLinear",
    "QuantConv2d",
    "INTEGER_OPS",
    "ort_optimized_ops",
    "Int8Static",
    "SmoothQuant",
    "GPTQ",
    "SignRound",
    "PreparedLinear",
    "quantize_static",
    "correct_bias",
    "Int8Dynamic",
    "WeightOnly",
    "FloatCast",
    "PackedLinear",
    "PackedEmbedding",
    "pack_int4",
    "unpack_int4",
]

# advanced methods: QAT (LSQ / STE), binarization, data-free ZeroQ, integer-only inference
from shrink.quant.binary import Binarize  # noqa: E402
from shrink.quant.qat import QAT  # noqa: E402
from shrink.quant.runtimes.intonly import IntegerModel, integer_model  # noqa: E402
from shrink.quant.zeroq import ZeroQ  # noqa: E402

__all__ += ["QAT", "Binarize", "ZeroQ", "IntegerModel", "integer_model"]

# real int8 execution in PyTorch (oneDNN / fbgemm kernels), optionally compiled with Inductor
from shrink.quant.runtimes.torch_backend import to_torch_int8  # noqa: E402
from shrink.quant.runtimes.torch_package import (  # noqa: E402
    PackagedInt8,
    load_int8_package,
    package_cpu_isa,
    package_int8,
)
from shrink.quant.runtimes.torch_token import (  # noqa: E402
    CompiledInt8,
    SharedInputGEMM,
    SharedInputMember,
    TokenInt8Linear,
    compile_int8,
    merge_shared_inputs,
)
from shrink.quant.runtimes.torch_weight_only import (  # noqa: E402
    Int4WeightLinear,
    Int8WeightLinear,
    to_torch_weight_only,
)
from shrink.quant.runtimes.widen import widen_to_int8  # noqa: E402
from shrink.quant.torch_kernels import TorchKernels, to_torch_kernels  # noqa: E402

__all__ += [
    "to_torch_int8",
    "to_torch_weight_only",
    "widen_to_int8",
    "Int8WeightLinear",
    "Int4WeightLinear",
    "TorchKernels",
    "to_torch_kernels",
    "TokenInt8Linear",
    "SharedInputGEMM",
    "SharedInputMember",
    "merge_shared_inputs",
    "compile_int8",
    "CompiledInt8",
    "package_int8",
    "load_int8_package",
    "package_cpu_isa",
    "PackagedInt8",
]
