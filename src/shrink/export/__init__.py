"""Export: ONNX files (QDQ int8 for quantized models), ONNX Runtime sessions, and shrink's own model file."""

from shrink.export.artifact import artifact_bytes, load, save
from shrink.export.onnx import OnnxModel, onnx, to_onnxruntime
from shrink.export.size import artifact_size

__all__ = ["onnx", "OnnxModel", "to_onnxruntime", "save", "load", "artifact_bytes", "artifact_size"]
