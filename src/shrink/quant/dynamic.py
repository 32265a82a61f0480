"""Dynamic quantization (``int8_dynamic``): int8 weights (per-channel, symmetric), activations quantized per batch
at run time, no calibration.

Two backends, one config:

* ``onnxruntime`` — Linear layers become :class:`QuantLinear` (dynamic); PyTorch simulates, the ONNX export is
  ``DynamicQuantizeLinear -> MatMulInteger`` (fused by ONNX Runtime into ``DynamicQuantizeMatMul``). LSTM layers
  keep their type with weights rounded onto per-row int8 grids and export as ONNX Runtime's ``DynamicQuantizeLSTM``
  (its int8 kernel). ONNX Runtime has no int8 GRU: a GRU needs the torch backend or ``selector.ignore``.
* ``torch`` — PyTorch's own dynamic int8 kernels (``torch.ao.nn.quantized.dynamic``) for Linear with shrink's
  per-channel scales, and for LSTM / GRU (their weights use PyTorch's per-tensor observer, noted in the report).
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import nn

from shrink._parametrize import bake_parametrizations
from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.errors import UnsupportedOpError
from shrink.quant.algorithms.observers import channel_grid
from shrink.quant.layers.convert import (
    check_weights,
    effective_weight_bits,
    quantized_layer,
    selected_layers,
    set_module,
)
from shrink.quant.layers.prepared import PreparedLinear, recorded_grid
from shrink.quant.onnx.export import attach_export
from shrink.quant.onnx.lstm import round_lstm_weights
from shrink.select import Selector

__all__ = ["Int8Dynamic", "quantize_dynamic"]


@register("int8_dynamic", family="quantize")
class Int8Dynamic(Config):
    """Int8 weights, per-batch activation quantization: Linear and LSTM (both backends), GRU (torch backend)."""

    #: 'onnxruntime': simulated Linears / LSTMs exporting integer ONNX ops; 'torch': PyTorch's int8 kernels
    backend: Literal["onnxruntime", "torch"] = "onnxruntime"
    weight_observer: Literal["minmax", "mse"] = "minmax"
    #: one activation range per batch tensor (ONNX DynamicQuantizeLinear) or per token / row (onnxruntime backend)
    granularity: Literal["tensor", "token"] = "tensor"
    #: "auto": uint8 + 128 ONNX weights on x86 CPUs without VNNI (see convert.effective_weight_bits)
    weight_range: Literal["auto", "full", "reduced", "u8"] = "auto"
    selector: Selector = Selector(types=("Linear", "LSTM", "GRU"))


def _torch_dynamic_linear(layer: nn.Linear, observer: str, name: str) -> nn.Module:
    import torch.ao.nn.quantized.dynamic as nnqd

    qp = channel_grid(layer.weight, 8, observer, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates quantized tensors in favour of torchao
        q = nnqd.Linear(layer.in_features, layer.out_features, bias_=layer.bias is not None, dtype=torch.qint8)
        qw = torch.quantize_per_channel(
            layer.weight.detach().float(), qp.scale.double(), qp.zero_point.long(), 0, torch.qint8
        )
        q.set_weight_bias(qw, layer.bias.detach() if layer.bias is not None else None)
    return q


def _torch_dynamic_rnn(layer: nn.Module) -> nn.Module:
    import torch.ao.nn.quantized.dynamic as nnqd
    from torch.ao.quantization import default_dynamic_qconfig

    setattr(layer, "qconfig", default_dynamic_qconfig)  # noqa: B010  (nn.Module types attributes as Tensor | Module)
    cls = nnqd.LSTM if isinstance(layer, nn.LSTM) else nnqd.GRU
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls.from_float(layer)


def quantize_dynamic(model: nn.Module, config: Int8Dynamic, ctx: Context) -> nn.Module:
    bake_parametrizations(model)  # pruning masks etc. become plain weights (our copy)
    check_weights(model)
    supported: tuple[type[nn.Module], ...] = (
        (nn.Linear, nn.LSTM, nn.GRU) if config.backend == "torch" else (nn.Linear, PreparedLinear, nn.LSTM)
    )
    try:
        layers = selected_layers(model, config.selector, "int8_dynamic.selector", supported)
    except UnsupportedOpError as exc:
        if config.backend == "onnxruntime" and any(isinstance(m, nn.GRU) for m in model.modules()):
            raise UnsupportedOpError(
                f"{exc}; ONNX Runtime has no int8 GRU kernel: with the GRU in selector.ignore it stays float in the "
                "ONNX file (the Linear layers are still int8); backend='torch' runs PyTorch's int8 GRU kernel, in "
                "PyTorch only (no ONNX export)"
            ) from None
        raise
    wbits, u8, range_note = effective_weight_bits(8, config.weight_range)
    if range_note and config.backend == "onnxruntime":
        ctx.notes.append(f"int8_dynamic: {range_note}")
    for name, layer in layers.items():
        if config.backend == "onnxruntime" and isinstance(layer, nn.LSTM):
            round_lstm_weights(layer, wbits, config.weight_observer, name, u8)
            continue
        if config.backend == "torch":
            new = (
                _torch_dynamic_linear(layer, config.weight_observer, name)
                if isinstance(layer, nn.Linear)
                else _torch_dynamic_rnn(layer)
            )
        else:
            assert isinstance(layer, nn.Linear)  # the onnxruntime backend's LSTMs were handled above
            new = quantized_layer(layer, wbits, "dynamic_token" if config.granularity == "token" else "dynamic")
            new.onnx_u8_weights = u8
            grid = recorded_grid(layer, wbits, f"int8_dynamic: layer {name!r}")  # a gptq stage's codes, if any
            qp = grid if grid is not None else channel_grid(layer.weight, wbits, config.weight_observer, name)
            new.set_weight(layer.weight.detach(), qp)
        set_module(model, name, new)
    rnns = sum(not isinstance(m, nn.Linear) for m in layers.values()) if config.backend == "torch" else 0
    ctx.notes.append(
        f"int8_dynamic ({config.backend}): {len(layers)} layers quantized"
        + (f" ({rnns} LSTM/GRU with PyTorch's per-tensor weight observer)" if rnns else "")
    )
    if config.backend == "torch":
        setattr(model, "shrink_execution", "int8 dynamic (real, PyTorch quantized kernels)")  # noqa: B010  (nn.Module types attributes as Tensor | Module)
        return model
    ctx.notes.append("int8_dynamic: PyTorch figures are simulated (fake-quant); the ONNX export runs integer kernels")
    if any(isinstance(m, nn.LSTM) for m in layers.values()):
        ctx.notes.append(
            "int8_dynamic: LSTM weights rounded to int8 in PyTorch (activations float there); the ONNX export runs "
            "them in ONNX Runtime's DynamicQuantizeLSTM"
        )
    return attach_export(model)


implements(Int8Dynamic)(quantize_dynamic)
