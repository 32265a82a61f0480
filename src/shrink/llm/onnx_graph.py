"""Passes over an exported decoder graph, run by :func:`shrink.llm.onnx.export_decoder` before it saves the file.

- :func:`fuse_shared_input_matmuls`: MatMuls (float, or ONNX Runtime's ``MatMulNBits``) that read the same input with
  constant weights -- a layer's query / key / value projections, its gate and up projections -- become one MatMul
  over their weights side by side, then a ``Split``: fewer, wider products per token, the same numbers (each output
  column is computed from its own weights, as before).
- :func:`simplify`: the ONNX Simplifier (``onnxsim``) folds the shape arithmetic the TorchScript exporter writes for
  every ``view`` and ``reshape`` (``Shape`` / ``Gather`` / ``Unsqueeze`` / ``Concat`` chains and constants: most of
  the operators of a decoder exported from transformers), which ONNX Runtime would otherwise run at every step.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["fuse_shared_input_matmuls", "simplify"]

#: the weight-only MatMul of ONNX Runtime's contrib domain: inputs A, B, scales, zero points (optional)
NBITS = ("com.microsoft", "MatMulNBits")


def _group_key(node: onnx.NodeProto, weights: dict[str, np.ndarray]) -> tuple[Any, ...] | None:
    """What a MatMul must share with another to be fused with it (None: not fusable): its input, kind, settings
    and weights' dtypes and shapes but for the output axis."""
    constant = all(name in weights for name in node.input[1:])
    if node.op_type == "MatMul" and node.domain == "" and constant:
        w = weights[node.input[1]]
        return ("MatMul", node.input[0], w.dtype.str, w.shape[0]) if w.ndim == 2 else None
    if (node.domain, node.op_type) == NBITS and constant and len(node.input) <= 4 and all(node.input):
        attrs = tuple(sorted((a.name, helper.get_attribute_value(a)) for a in node.attribute if a.name != "N"))
        shapes = tuple((weights[n].dtype.str, weights[n].shape[1:]) for n in node.input[1:])
        return ("MatMulNBits", node.input[0], attrs, shapes)
    return None


def _fused(nodes: list[onnx.NodeProto], weights: dict[str, np.ndarray]) -> tuple[list[onnx.NodeProto], list]:
    """One MatMul over the weights of ``nodes`` side by side and a Split into their outputs; the new initializers."""
    name = f"{nodes[0].name or nodes[0].output[0]}_fused"
    nbits = (nodes[0].domain, nodes[0].op_type) == NBITS
    axis = 0 if nbits else 1  # MatMulNBits stores weights [N, ...]; MatMul [K, N]
    parts = [[weights[n] for n in node.input[1:]] for node in nodes]
    widths = [p[0].shape[axis] for p in parts]
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(np.concatenate(arrays, axis if i == 0 else 0)), f"{name}.{i}")
        for i, arrays in enumerate(zip(*parts, strict=True))
    ]
    sizes = numpy_helper.from_array(np.array(widths, np.int64), f"{name}.split")
    matmul = helper.make_node(
        nodes[0].op_type, [nodes[0].input[0], *(t.name for t in inits)], [f"{name}.out"], name, domain=nodes[0].domain
    )
    for attr in nodes[0].attribute:
        matmul.attribute.append(helper.make_attribute("N", sum(widths)) if attr.name == "N" else attr)
    split = helper.make_node("Split", [matmul.output[0], sizes.name], [n.output[0] for n in nodes], f"{name}.split")
    split.attribute.append(helper.make_attribute("axis", -1))
    return [matmul, split], [*inits, sizes]


def fuse_shared_input_matmuls(model: onnx.ModelProto) -> int:
    """Fuse, in place, the MatMuls of ``model``'s main graph that read one input with constant weights of the same
    kind (see the module docstring); returns how many groups were fused. Nodes with one output only."""
    graph = model.graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i, node in enumerate(graph.node):
        key = _group_key(node, weights) if len(node.output) == 1 else None
        if key is not None:
            groups[key].append(i)
    replaced: dict[int, list[onnx.NodeProto]] = {}
    dropped: set[int] = set()
    added: list[onnx.TensorProto] = []
    for members in groups.values():
        if len(members) > 1:
            replaced[members[0]], inits = _fused([graph.node[i] for i in members], weights)
            dropped.update(members[1:])
            added += inits
    if not replaced:
        return 0
    nodes = [new for i, node in enumerate(graph.node) if i not in dropped for new in replaced.get(i, [node])]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend([*kept, *added])
    return len(replaced)


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its constant shape arithmetic folded (the ONNX Simplifier; dynamic axes stay dynamic), after
    ONNX Runtime's symbolic shape inference, which knows its contrib operators' output shapes (``MatMulNBits``: the
    batch of 1 behind it is then a constant too). Raises RuntimeError if the simplifier cannot vouch for the
    result."""
    import onnxsim
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    with contextlib.suppress(Exception):  # an operator it cannot infer: fold what ONNX's own inference sees
        model = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise RuntimeError("simplify: the ONNX Simplifier could not check the simplified graph")
    return simplified
