"""ONNX Runtime's int8 LSTM for exported models: every ``LSTM`` node of a layer labelled ``shrink_onnx_int8`` (by
``int8_dynamic``, see :mod:`shrink.quant.onnx.lstm`) is rewritten as ``com.microsoft.DynamicQuantizeLSTM`` (int8
weights, activations quantized at run time by the kernel).

The labelled layer's weights already lie on per-row symmetric grids, whose largest magnitude per row is ``±qmax``
(the observer's clipping saturates there too), so ``max|row| / qmax`` is that row's scale and every weight divides
into it exactly. A node whose weights do not (an LSTM the selector skipped) is left float.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torch import nn

from shrink._atomic import atomic_write_bytes
from shrink.errors import UnsupportedOpError

__all__ = ["LABEL", "export_int8_lstms", "lstm_to_dynamic_int8"]

#: the attribute that marks an LSTM for ``DynamicQuantizeLSTM``: "qmax=<largest code> u8=<0|1>"
LABEL = "shrink_onnx_int8"
#: the largest error, relative to a row's scale, for a weight still to count as lying on the grid
_ON_GRID = 1e-3


def export_int8_lstms(model: nn.Module, path: Path) -> None:
    """After ``model`` was exported to ``path``: rewrite the nodes of its labelled LSTMs as ``DynamicQuantizeLSTM``.
    Each LSTM exports one node per layer; a count that does not match deletes the file and raises."""
    labelled = [m for m in model.modules() if isinstance(m, nn.LSTM) and getattr(m, LABEL, None)]
    if not labelled:
        return
    settings = {getattr(m, LABEL) for m in labelled}
    if len(settings) > 1:
        raise UnsupportedOpError(f"ONNX export: int8 LSTM layers quantized with different grids: {sorted(settings)}")
    fields = dict(item.split("=") for item in settings.pop().split())
    expected = sum(m.num_layers for m in labelled)
    done = lstm_to_dynamic_int8(path, int(fields["qmax"]), fields["u8"] == "1")
    if done != expected:
        path.unlink(missing_ok=True)
        raise UnsupportedOpError(
            f"ONNX export: {expected} int8 LSTM layer(s) expected in the exported graph, {done} found with their int8 "
            "weights (an LSTM exported in another form, e.g. batch-major or unrolled)"
        )


def _row_codes(weights: np.ndarray, qmax: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``weights`` (directions, rows, cols) as int8 codes and per-row scales, or None if they are not on a grid."""
    peak = np.abs(weights).max(axis=2)
    scale = np.where(peak > 0, peak / qmax, 1.0).astype(np.float32)
    codes = np.round(weights / scale[..., None])
    if np.abs(codes * scale[..., None] - weights).max(initial=0.0) > _ON_GRID * scale.min():
        return None
    return codes.astype(np.int8), scale


def lstm_to_dynamic_int8(path: str | os.PathLike[str], qmax: int, u8: bool = False) -> int:
    """Rewrite, in the ONNX file at ``path``, every ``LSTM`` node whose weights lie on per-row grids of ``±qmax``
    as ``DynamicQuantizeLSTM``. ``u8``: store the codes as uint8 + 128 (for ONNX Runtime's u8 x u8 kernels on CPUs
    without VNNI). Returns the number of nodes rewritten; the file is replaced atomically."""
    import onnx
    from onnx import helper, numpy_helper

    path = Path(path)
    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    rewritten = 0
    for i, node in enumerate(list(graph.node)):
        if node.op_type != "LSTM" or node.input[1] not in inits or node.input[2] not in inits:
            continue
        if any(a.name == "layout" and a.i != 0 for a in node.attribute):
            continue  # batch-major LSTM: DynamicQuantizeLSTM has no layout attribute
        grids = [_row_codes(numpy_helper.to_array(inits[node.input[k]]), qmax) for k in (1, 2)]
        if any(g is None for g in grids):
            continue
        extra = []
        for k, grid in zip((1, 2), grids, strict=True):
            assert grid is not None
            codes, scale = grid
            stored = (codes.astype(np.int16) + 128).astype(np.uint8) if u8 else codes
            zero = np.full(scale.shape, 128 if u8 else 0, dtype=stored.dtype)
            base = f"{node.input[k]}_int8"
            # DynamicQuantizeLSTM wants (directions, inputs, 4 * hidden): ONNX LSTM's weights transposed
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(stored.transpose(0, 2, 1)), base))
            graph.initializer.append(numpy_helper.from_array(scale, f"{base}_scale"))
            graph.initializer.append(numpy_helper.from_array(zero, f"{base}_zero_point"))
            extra.append((base, f"{base}_scale", f"{base}_zero_point"))
        inputs = list(node.input) + [""] * (8 - len(node.input))
        inputs[1], inputs[2] = extra[0][0], extra[1][0]
        inputs += [extra[0][1], extra[0][2], extra[1][1], extra[1][2]]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name != "layout"}  # 0 here
        new = helper.make_node(
            "DynamicQuantizeLSTM", inputs, list(node.output), f"{node.name}_int8", domain="com.microsoft", **attrs
        )
        graph.node.remove(node)
        graph.node.insert(i, new)
        rewritten += 1
    if not rewritten:
        return 0
    used = {name for n in graph.node for name in n.input}
    for t in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(t)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    atomic_write_bytes(path, model.SerializeToString())
    return rewritten
