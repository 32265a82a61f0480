"""An ONNX Runtime session says what it runs, read from the graph: an int8 graph is never labelled fp32."""

import shrink
from shrink.export.onnx import OnnxModel, graph_execution, to_onnxruntime
from shrink.quant import Int8Static
from shrink.zoo import digits_data, digits_student


def test_int8_graph_is_labelled_int8_and_float_graph_fp32(tmp_path):
    data = digits_data()
    model = digits_student(pretrained=True)
    q = shrink.quantize(model, Int8Static(observer="minmax"), calibration=data.calibration)
    int8_path = shrink.export.onnx(q, tmp_path / "q.onnx", data.example_inputs)
    fp32_path = shrink.export.onnx(model, tmp_path / "f.onnx", data.example_inputs)
    assert graph_execution(int8_path) == "int8 (real, integer kernels)"
    assert OnnxModel(int8_path, threads=1).execution == "int8 (real, integer kernels)"
    assert OnnxModel(fp32_path, threads=1).execution == "fp32"
    assert to_onnxruntime(q, data.example_inputs, threads=1, directory=tmp_path / "d").execution.startswith("int8")
    assert OnnxModel(int8_path, threads=1, execution="custom").execution == "custom"  # an explicit label wins


def test_int4_matmulnbits_graph_is_labelled_int4(tmp_path):
    import torch
    from torch import nn

    from shrink.quant import WeightOnly

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    q = shrink.quantize(model, WeightOnly(bits=4, group_size=32))
    path = shrink.export.onnx(q, tmp_path / "q4.onnx", torch.randn(2, 64))
    assert graph_execution(path).startswith("int4 weights (ONNX Runtime MatMulNBits")
