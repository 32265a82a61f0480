"""Int8 LSTM for ONNX Runtime, the PyTorch side: an ``nn.LSTM`` whose weights are rounded onto per-row int8 grids
(the float activations are the simulated part) and labelled ``shrink_onnx_int8`` (a string attribute, kept by
``shrink.save`` / ``load``). Every ONNX export of a model with such layers (:func:`shrink.export.onnx`) runs them on
ONNX Runtime's ``DynamicQuantizeLSTM`` kernel (:mod:`shrink.export.lstm_int8`). ONNX Runtime has no int8 GRU kernel,
so GRU layers are not handled here.
"""

from __future__ import annotations

import torch
from torch import nn

from shrink.errors import UnsupportedOpError
from shrink.export.lstm_int8 import LABEL
from shrink.quant.algorithms.observers import channel_grid
from shrink.quant.numerics.qparams import fake_quantize

__all__ = ["round_lstm_weights"]


def round_lstm_weights(lstm: nn.LSTM, bits: int, observer: str, name: str, u8: bool = False) -> None:
    """Round every input and recurrent weight matrix of ``lstm`` in place onto its per-row symmetric ``bits``-bit
    grid chosen by ``observer``, and label it for the ONNX export (``u8``: codes stored as uint8 + 128 there)."""
    if lstm.proj_size:
        raise UnsupportedOpError(
            f"int8_dynamic: LSTM {name!r} has proj_size={lstm.proj_size}; ONNX Runtime's int8 LSTM has no projection"
        )
    with torch.no_grad():
        for pname, param in lstm.named_parameters():
            if pname.startswith("weight_"):
                param.copy_(fake_quantize(param, channel_grid(param, bits, observer, f"{name}.{pname}")))
    setattr(lstm, LABEL, f"qmax={2 ** (bits - 1) - 1} u8={int(u8)}")
