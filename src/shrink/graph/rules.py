"""How each ATen op moves, couples, consumes or produces channels.

The propagator walks the exported graph once. Every tensor value is a :class:`Channels` (tracked channels), a
:class:`ParamRef` (a parameter on its way to an op) or ``None`` (no tracked channel: model inputs, masks, indices).
An op with tracked inputs that has no rule here is unsupported: an error naming the op and module path, or, when the
user asked to skip, its channels are frozen (kept) and the op is listed in the notes.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import fx

from shrink.graph.channels import Channels, ChannelState, ParamRef
from shrink.graph.trace import TracedGraph

__all__ = ["Propagator", "Unsupported", "op_name"]


class Unsupported(Exception):
    """Raised by a rule: this use of the op cannot be pruned through."""


def op_name(node: fx.Node) -> str:
    if node.target is operator.getitem:
        return "getitem"
    name = str(node.target)
    return name.split(".")[1] if name.startswith("aten.") else name


def _maybe_shape(a: Any) -> tuple[int, ...] | None:
    """Shape of the tensor a traced argument holds; None for scalars, lists and non-tensor values."""
    v = a.meta.get("val") if isinstance(a, fx.Node) else None
    return tuple(int(s) for s in v.shape) if isinstance(v, torch.Tensor) else None


def _shape(a: Any) -> tuple[int, ...]:
    """Shape of a traced tensor argument; an argument that holds no tensor cannot be pruned through."""
    shape = _maybe_shape(a)
    if shape is None:
        raise Unsupported(f"expected a traced tensor, got {type(a).__name__}")
    return shape


def _args(node: fx.Node) -> tuple[Any, ...]:
    """The node's positional arguments. Their types follow the aten op's schema, which each rule knows; fx types
    them as the union of every possible argument."""
    return node.args


def _arg(node: fx.Node, i: int, name: str, default: Any = None) -> Any:
    return _args(node)[i] if len(_args(node)) > i else node.kwargs.get(name, default)


def _width(c: Channels, k: int) -> int:
    """Size of the tensor axis ``c.axes[k]``."""
    if not c.heads:
        return c.ids.size * c.rep
    return c.ids.shape[k]


POINTWISE = set(
    [
        "add",
        "sub",
        "rsub",
        "mul",
        "div",
        "where",
        "maximum",
        "minimum",
        "relu",
        "relu_",
        "gelu",
        "silu",
        "sigmoid",
        "tanh",
        "hardtanh",
        "hardtanh_",
        "hardswish",
        "hardsigmoid",
        "relu6",
        "leaky_relu",
        "elu",
        "mish",
        "dropout",
        "clone",
        "contiguous",
        "to",
        "_to_copy",
        "detach",
        "detach_",
        "alias",
        "lift_fresh_copy",
        "pow",
        "sqrt",
        "rsqrt",
        "exp",
        "log",
        "neg",
        "abs",
        "clamp",
        "clamp_min",
        "clamp_max",
        "erf",
        "add_",
        "mul_",
        "sub_",
        "div_",
        "type_as",
        "masked_fill",
        "eq",
        "ne",
        "gt",
        "ge",
        "lt",
        "le",
        "__and__",
        "__or__",
        "bitwise_not",
        "logical_not",
        "square",
        "sin",
        "cos",
        "reciprocal",
        "sign",
        "floor",
        "round",
        "softplus",
        "silu_",
        "gelu_",
        "sigmoid_",
        "tanh_",
    ]
)  # noqa: SIM905
PARAM_PASSTHROUGH = {"to", "_to_copy", "clone", "contiguous", "detach", "alias", "lift_fresh_copy", "type_as"}
FIRST_ARG_OPS = set(
    [
        "softmax",
        "_softmax",
        "log_softmax",
        "sum",
        "mean",
        "amax",
        "amin",
        "linalg_vector_norm",
        "var",
        "std",
        "norm",
        "logsumexp",
        "prod",
        "view",
        "reshape",
        "_unsafe_view",
        "flatten",
        "transpose",
        "permute",
        "t",
        "unsqueeze",
        "squeeze",
        "select",
        "slice",
        "index",
        "index_select",
        "expand",
        "expand_as",
        "repeat",
        "split",
        "split_with_sizes",
        "chunk",
        "unbind",
        "pad",
        "constant_pad_nd",
    ]
)  # noqa: SIM905
IGNORED = {"_assert_tensor_metadata", "sym_size", "sym_numel", "sym_stride", "_assert_scalar", "size"}


#: which method of :class:`Propagator` handles each aten op name (a later entry wins)
RULE_OPS: dict[str, tuple[str, ...]] = {
    "pointwise": tuple(POINTWISE),
    "softmax": ("softmax", "_softmax", "log_softmax"),
    "reduce": ("sum", "mean", "amax", "amin", "linalg_vector_norm", "var", "std", "norm", "logsumexp", "prod"),
    "pool": (
        "adaptive_avg_pool2d",
        "adaptive_avg_pool1d",
        "avg_pool2d",
        "avg_pool1d",
        "max_pool2d",
        "max_pool1d",
        "adaptive_max_pool2d",
        "max_pool2d_with_indices",
        "upsample_nearest2d",
        "upsample_bilinear2d",
        "_adaptive_avg_pool2d",
    ),
    "pad": ("pad", "constant_pad_nd"),
    "reshape": ("view", "reshape", "_unsafe_view"),
    "flatten": ("flatten",),
    "permute": ("transpose", "permute", "t"),
    "unsqueeze": ("unsqueeze",),
    "squeeze": ("squeeze",),
    "select": ("select",),
    "slice": ("slice",),
    "index": ("index",),
    "index_select": ("index_select",),
    "expand": ("expand", "expand_as", "repeat"),
    "cat": ("cat",),
    "getitem": ("getitem",),
    "split": ("split", "split_with_sizes", "chunk", "unbind"),
    "conv": ("conv1d", "conv2d", "conv3d", "convolution"),
    "linear": ("linear",),
    "addmm": ("addmm",),
    "matmul": ("matmul", "mm", "bmm"),
    "sdpa": ("scaled_dot_product_attention",),
    "embedding": ("embedding",),
    "batch_norm": ("batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm"),
    "layer_norm": ("layer_norm", "native_layer_norm", "rms_norm"),
    "group_norm": ("group_norm",),
}


class Propagator:
    """Runs the rules over a traced graph, filling a :class:`ChannelState`."""

    def __init__(self, traced: TracedGraph, state: ChannelState, on_unsupported: str) -> None:
        self.traced, self.s, self.on_unsupported = traced, state, on_unsupported
        self.env: dict[fx.Node, Any] = {}
        self.skipped: list[str] = []
        self.rules: dict[str, Callable[[fx.Node], Any]] = {
            op: getattr(self, method) for method, ops in RULE_OPS.items() for op in ops
        }

    # ------------------------------------------------------------------ driver
    def run(self) -> None:
        for node in self.traced.graph.nodes:
            if node.op == "placeholder":
                fqn = self.traced.tensors.get(node.name)
                shape = _maybe_shape(node)  # None for a non-tensor input (a float option)
                self.env[node] = ParamRef(fqn, tuple(range(len(shape))), shape) if fqn and shape is not None else None
            elif node.op == "output":
                for v in self._values(_args(node)):
                    if isinstance(v, Channels):
                        self.s.freeze(v.ids, "they are model outputs")
            elif node.op == "call_function":
                self.env[node] = self._call(node)

    def _values(self, args: Any) -> list[Any]:
        out: list[Any] = []
        for a in args if isinstance(args, (tuple, list)) else [args]:
            if isinstance(a, (tuple, list)):
                out += self._values(a)
            elif isinstance(a, fx.Node):
                v = self.env.get(a)
                out += [x for x in v] if isinstance(v, list) else [v]
        return out

    def _call(self, node: fx.Node) -> Any:
        name = op_name(node)
        inputs = self._values([*_args(node), *node.kwargs.values()])
        tracked = [v for v in inputs if isinstance(v, Channels)]
        params = [v for v in inputs if isinstance(v, ParamRef)]
        if name in IGNORED or (not tracked and not params):
            return None
        if not tracked and name in PARAM_PASSTHROUGH and isinstance(self.env.get(_args(node)[0]), ParamRef):
            return self.env[_args(node)[0]]
        rule = self.rules.get(name)
        if name in FIRST_ARG_OPS and _args(node) and self.v(_args(node)[0]) is None:
            return None  # the op reshapes/reads an untracked tensor; tracked arguments only give sizes
        try:
            if rule is None:
                raise Unsupported("no channel rule for this op")
            return rule(node)
        except Unsupported as exc:
            if not tracked:  # parameters used in an unknown way: never slice them
                self.s.opaque.update(p.fqn for p in params)
                return None
            path = TracedGraph.module_path(node) or "<model>"
            what = f"op {str(node.target)!r} at module {path!r}: {exc}"
            if self.on_unsupported == "error":
                from shrink.errors import UnsupportedOpError

                raise UnsupportedOpError(
                    f"structured pruning cannot handle {what} (pass on_unsupported='skip' to "
                    "keep the channels it touches)"
                ) from None
            self.skipped.append(what)
            for c in tracked:
                self.s.freeze(c.ids, f"skipped {what}")
            self.s.opaque.update(p.fqn for p in params)
            return None

    def v(self, a: Any) -> Any:
        return self.env.get(a) if isinstance(a, fx.Node) else None

    def path(self, node: fx.Node) -> str:
        return TracedGraph.module_path(node) or "<model>"

    # ------------------------------------------------------------------ elementwise
    def pointwise(self, node: fx.Node, operands: list[Any] | None = None) -> Any:
        operands = (
            operands
            if operands is not None
            else [a for a in [*_args(node), *node.kwargs.values()] if isinstance(a, fx.Node)]
        )
        out = _shape(node)
        if out is None:
            raise Unsupported("output is not a tensor")
        nd = len(out)
        lead: Channels | None = None
        for a in operands:
            c = self.v(a)
            if not isinstance(c, Channels):
                continue
            off = nd - len(_shape(a) or ())
            c = c.moved(tuple(None if x is None else x + off for x in c.axes))
            if lead is None:
                lead = c
            elif c.axes == lead.axes and c.ids.shape == lead.ids.shape and c.rep == lead.rep:
                self.s.union(lead.ids, c.ids)
            elif lead.heads and c.heads and c.axes[0] == lead.axes[0] and c.ids.shape[0] == lead.ids.shape[0]:
                self.s.union(lead.ids[:, 0], c.ids[:, 0])
                if lead.axes[1] is None and c.axes[1] is not None:
                    lead = c
            else:
                raise Unsupported("operands' channel axes do not line up")
        if lead is None:
            raise Unsupported("only parameters, no tracked channels")
        for a in operands:
            val, shape = self.v(a), _maybe_shape(a)
            if isinstance(val, Channels) or shape is None or 0 in shape:
                continue
            off = nd - len(shape)
            for ax in lead.axes:
                d = None if ax is None else ax - off
                if d is None or d < 0 or shape[d] == 1:
                    continue
                pd = val.dims[d] if isinstance(val, ParamRef) and not lead.heads else None
                if (
                    isinstance(val, ParamRef)
                    and pd is not None
                    and self.s.add_member((val.fqn, pd), val.shape[pd], lead.ids, lead.rep, "other")
                ):
                    continue
                self.s.freeze(lead.ids, f"{op_name(node)} at {self.path(node)} combines them with another tensor")
        return lead

    def softmax(self, node: fx.Node) -> Any:
        c = self.v(_args(node)[0])
        dim = _args(node)[1] % len(_shape(node))
        if dim in c.axes:
            self.s.freeze(c.ids, f"softmax over them at {self.path(node)}")
        return c

    def reduce(self, node: fx.Node) -> Any:
        c, shape = self.v(_args(node)[0]), _shape(_args(node)[0])
        name = op_name(node)
        i = 2 if name == "linalg_vector_norm" else 1
        dims = _arg(node, i, "dim", None)
        keep = bool(_arg(node, i + 1, "keepdim", False))
        if not isinstance(c, Channels):
            raise Unsupported("reduces a parameter")
        dims = list(range(len(shape))) if dims is None or dims == [] else [dims] if isinstance(dims, int) else dims
        dims = [d % len(shape) for d in dims]
        if any(a in dims for a in c.axes if a is not None):
            self.s.freeze(c.ids, f"{name} over them at {self.path(node)}")
            return None
        return c.moved(tuple(None if a is None else a if keep else a - sum(d < a for d in dims) for a in c.axes))

    def pool(self, node: fx.Node) -> Any:
        c, nd = self.v(_args(node)[0]), len(_shape(_args(node)[0]))
        spatial = 1 if "1d" in op_name(node) else 2
        if not isinstance(c, Channels) or any(a is not None and a >= nd - spatial for a in c.axes):
            raise Unsupported("pooling over the channel axis")
        return [c, None] if isinstance(node.meta.get("val"), (tuple, list)) else c

    def pad(self, node: fx.Node) -> Any:
        """Padding leaves channels alone unless it adds entries along a channel axis; zero padding there (Swin pads
        ``(0, 0, 0, pad_w, 0, pad_h)``, the channel axis last) is no padding."""
        c, nd, amounts = self.v(_args(node)[0]), len(_shape(_args(node)[0])), list(_args(node)[1])

        def padded(axis: int) -> bool:
            k = nd - 1 - axis  # F.pad lists (before, after) pairs from the last axis backwards
            return 2 * k < len(amounts) and any(not (isinstance(p, int) and p == 0) for p in amounts[2 * k : 2 * k + 2])

        if not isinstance(c, Channels) or any(a is not None and padded(a) for a in c.axes):
            raise Unsupported("padding the channel axis")
        return c

    # ------------------------------------------------------------------ layout
    def reshape(self, node: fx.Node) -> Any:
        x, ins, out = self.v(_args(node)[0]), _shape(_args(node)[0]), _shape(node)
        if isinstance(x, ParamRef):
            if [s for s in ins if s != 1] != [s for s in out if s != 1]:
                raise Unsupported("reshapes a parameter")
            kept = iter([d for d, s in zip(x.dims, ins, strict=True) if s != 1])
            return ParamRef(x.fqn, tuple(next(kept) if s != 1 else None for s in out), x.shape)
        prefix = [math.prod(out[:j]) for j in range(len(out) + 1)]

        def at(pre: int, size: int) -> int | None:
            return next((j for j in range(len(out)) if prefix[j] == pre and out[j] == size), None)

        if x.heads:
            ah, ad = x.axes
            heads, hd = x.ids.shape
            if ad == ah + 1 and (j := at(math.prod(ins[:ah]), heads * hd)) is not None:
                return Channels(x.ids.reshape(-1), (j,))
            jh = at(math.prod(ins[:ah]), heads)
            jd = None if ad is None else at(math.prod(ins[:ad]), hd)
            if jh is not None and (ad is None or jd is not None):
                return x.moved((jh, jd))
            raise Unsupported("reshape mixes attention heads with other axes")
        a, width = x.axes[0], x.ids.size * x.rep
        pre = math.prod(ins[:a])
        if (j := at(pre, width)) is not None:
            return x.moved((j,))
        for j in range(len(out) - 1):  # split into [heads, head_dim]
            if prefix[j] == pre and out[j] * out[j + 1] == width and x.rep == 1 and out[j] > 1:
                ids = x.ids.reshape(out[j], out[j + 1])
                for row in ids:
                    self.s.union_all(row)
                self.s.head_splits.append((self.path(node), ids))
                return Channels(ids, (j, j + 1))
        for m in range(a + 1, len(ins)):  # merge with the following axes (flatten by view)
            if (j := at(pre, width * math.prod(ins[a + 1 : m + 1]))) is not None:
                return Channels(x.ids, (j,), x.rep * math.prod(ins[a + 1 : m + 1]))
        raise Unsupported(f"reshape {list(ins)} -> {list(out)} splits the channel axis")

    def flatten(self, node: fx.Node) -> Any:
        x, ins = self.v(_args(node)[0]), _shape(_args(node)[0])
        start, end = _arg(node, 1, "start_dim", 0) % len(ins), _arg(node, 2, "end_dim", -1) % len(ins)
        if not isinstance(x, Channels):
            raise Unsupported("flattens a parameter")
        if x.heads:
            if x.axes == (start, start + 1) and end == start + 1:
                return Channels(x.ids.reshape(-1), (start,))
            if all(a is None or a < start or a > end for a in x.axes):
                return x.moved(tuple(None if a is None else a if a < start else a - (end - start) for a in x.axes))
            raise Unsupported("flatten mixes attention heads with other axes")
        a = x.axes[0]
        if a < start:
            return x
        if a > end:
            return x.moved((a - (end - start),))
        if a == start:
            return Channels(x.ids, (start,), x.rep * math.prod(ins[start + 1 : end + 1]))
        raise Unsupported("flatten puts the channel axis inside the flattened features (channels-last)")

    def permute(self, node: fx.Node) -> Any:
        x, nd = self.v(_args(node)[0]), len(_shape(_args(node)[0]))
        name = op_name(node)
        if name == "permute":
            perm = [p % nd for p in _args(node)[1]]
        else:
            d0, d1 = (0, 1) if name == "t" else (_args(node)[1] % nd, _args(node)[2] % nd)
            perm = list(range(nd))
            perm[d0], perm[d1] = perm[d1], perm[d0]
        if isinstance(x, ParamRef):
            return ParamRef(x.fqn, tuple(x.dims[p] for p in perm), x.shape)
        return x.moved(tuple(None if a is None else perm.index(a) for a in x.axes))

    def unsqueeze(self, node: fx.Node) -> Any:
        x, nd = self.v(_args(node)[0]), len(_shape(node))
        d = _args(node)[1] % nd
        if isinstance(x, ParamRef):
            return ParamRef(x.fqn, x.dims[:d] + (None,) + x.dims[d:], x.shape)
        return x.moved(tuple(None if a is None else a + (a >= d) for a in x.axes))

    def squeeze(self, node: fx.Node) -> Any:
        x, ins = self.v(_args(node)[0]), _shape(_args(node)[0])
        dims = _args(node)[1] if len(_args(node)) > 1 else list(range(len(ins)))
        dims = [d % len(ins) for d in ([dims] if isinstance(dims, int) else dims) if ins[d % len(ins)] == 1]
        if isinstance(x, ParamRef):
            return ParamRef(x.fqn, tuple(p for i, p in enumerate(x.dims) if i not in dims), x.shape)
        if any(a in dims for a in x.axes):
            raise Unsupported("squeezes the channel axis")
        return x.moved(tuple(None if a is None else a - sum(d < a for d in dims) for a in x.axes))

    def select(self, node: fx.Node) -> Any:
        x, nd = self.v(_args(node)[0]), len(_shape(_args(node)[0]))
        d = _args(node)[1] % nd
        if isinstance(x, ParamRef):
            raise Unsupported("indexes a parameter")
        if d in x.axes:
            self.s.freeze(x.ids, f"select picks single channels at {self.path(node)}")
            return None
        return x.moved(tuple(None if a is None else a - (a > d) for a in x.axes))

    def slice(self, node: fx.Node) -> Any:
        x, ins, out = self.v(_args(node)[0]), _shape(_args(node)[0]), _shape(node)
        d = _arg(node, 1, "dim", 0) % len(ins)
        if ins == out:
            return x
        if isinstance(x, ParamRef):
            return ParamRef(x.fqn, tuple(None if i == d else p for i, p in enumerate(x.dims)), x.shape)
        if d not in x.axes:
            return x
        if x.heads or x.rep != 1:
            raise Unsupported("slices attention heads or flattened channels")
        start, end, step = _arg(node, 2, "start", None), _arg(node, 3, "end", None), _arg(node, 4, "step", 1)
        return Channels(x.ids[slice(start, end, step)], x.axes)

    def index(self, node: fx.Node) -> Any:
        x, ins, out = self.v(_args(node)[0]), _shape(_args(node)[0]), _shape(node)
        indexed = [i for i, t in enumerate(_args(node)[1]) if t is not None]
        if not isinstance(x, Channels):
            raise Unsupported("indexes a parameter")
        axes = [a for a in x.axes if a is not None]
        if any(a in indexed for a in axes) or max(indexed) > min(axes):
            self.s.freeze(x.ids, f"indexing at {self.path(node)}")
            return None
        off = len(out) - len(ins)
        return x.moved(tuple(None if a is None else a + off for a in x.axes))

    def index_select(self, node: fx.Node) -> Any:
        x = self.v(_args(node)[0])
        if not isinstance(x, Channels):
            raise Unsupported("indexes a parameter")
        if _args(node)[1] % len(_shape(node)) in x.axes:
            self.s.freeze(x.ids, f"index_select over them at {self.path(node)}")
            return None
        return x

    def expand(self, node: fx.Node) -> Any:
        x, ins, out = self.v(_args(node)[0]), _shape(_args(node)[0]), _shape(node)
        off = len(out) - len(ins)
        if isinstance(x, ParamRef):
            return ParamRef(x.fqn, (None,) * off + x.dims, x.shape)
        if any(a is not None and out[a + off] != ins[a] for a in x.axes):
            raise Unsupported("repeats the channel axis")
        return x.moved(tuple(None if a is None else a + off for a in x.axes))

    def cat(self, node: fx.Node) -> Any:
        tensors = list(_args(node)[0])
        nd = len(_shape(node))
        dim = _arg(node, 1, "dim", 0) % nd
        vals = [self.v(t) for t in tensors]
        if not any(isinstance(c, Channels) and not c.heads and c.axes[0] == dim for c in vals):
            return self.pointwise(node, tensors)
        pieces = []
        for t, c in zip(tensors, vals, strict=True):
            if isinstance(c, Channels):
                if c.heads or c.axes[0] != dim or c.rep != 1:
                    raise Unsupported("concatenates differently laid out channels")
                pieces.append(c.ids)
            else:
                f = self.s.fresh(_shape(t)[dim])
                self.s.freeze(f, f"untracked input of cat at {self.path(node)}")
                if isinstance(c, ParamRef):
                    self.s.opaque.add(c.fqn)
                pieces.append(f)
        return Channels(np.concatenate(pieces), (dim,))

    def split(self, node: fx.Node) -> Any:
        x, name = self.v(_args(node)[0]), op_name(node)
        nd = len(_shape(_args(node)[0]))
        dim = (_arg(node, 1, "dim", 0) if name == "unbind" else _arg(node, 2, "dim", 0)) % nd
        sizes = [int(t.shape[dim]) if name != "unbind" else 1 for t in node.meta["val"]]
        if not isinstance(x, Channels):
            raise Unsupported("splits a parameter")
        if dim not in x.axes:
            if name == "unbind":
                return [x.moved(tuple(None if a is None else a - (a > dim) for a in x.axes)) for _ in sizes]
            return [x for _ in sizes]
        if x.heads or x.rep != 1 or name == "unbind":
            raise Unsupported("splits attention heads or flattened channels")
        bounds = np.cumsum([0, *sizes])
        return [Channels(x.ids[bounds[i] : bounds[i + 1]], x.axes) for i in range(len(sizes))]

    def getitem(self, node: fx.Node) -> Any:
        x = self.v(_args(node)[0])
        if isinstance(x, list):
            return x[_args(node)[1]]
        raise Unsupported("indexes a tracked tensor like a tuple")

    # ------------------------------------------------------------------ layers
    def _param(self, a: Any, what: str) -> ParamRef:
        p = self.v(a)
        if not isinstance(p, ParamRef):
            raise Unsupported(f"its {what} is computed, not a parameter")
        return p

    def _out(self, ids: np.ndarray, refs: list[tuple[ParamRef | None, int]], role: str = "out") -> None:
        for p, d in refs:
            pd = p.dims[d] if p is not None else None
            if p is not None and pd is not None:
                self.s.add_member((p.fqn, pd), p.shape[pd], ids, 1, role)

    def _consume(self, x: Any, p: ParamRef, d: int, node: fx.Node) -> None:
        if isinstance(x, Channels):
            pd = p.dims[d]
            if x.heads or pd is None:
                raise Unsupported("its input channels are attention heads")
            if not self.s.add_member((p.fqn, pd), p.shape[pd], x.ids, x.rep, "in"):
                self.s.freeze(x.ids, f"input size mismatch at {self.path(node)}")

    def conv(self, node: fx.Node) -> Any:
        name = op_name(node)
        x, w = self.v(_args(node)[0]), self._param(_args(node)[1], "weight")
        b = self.v(_arg(node, 2, "bias"))
        if name == "convolution" and _args(node)[6]:
            raise Unsupported("transposed convolution")
        groups = (_args(node)[8] if name == "convolution" else _arg(node, 6, "groups", 1)) or 1
        cin, cout = _shape(_args(node)[0])[1], _shape(node)[1]
        if isinstance(x, Channels) and (x.heads or x.axes[0] != 1 or x.rep != 1):
            raise Unsupported("its input channel axis is not dim 1")
        if groups == 1:
            self._consume(x, w, 1, node)
            ids = self.s.fresh(cout)
        elif (
            groups == cin == cout and (wd := w.dims[1]) is not None and w.shape[wd] == 1
        ):  # depthwise: channel c in -> channel c out
            ids = x.ids if isinstance(x, Channels) else self.s.fresh(cout)
        else:  # grouped: a group's input and output channels form one unit, removing it drops one group
            ids = self.s.fresh(cout)
            per_in, per_out = cin // groups, cout // groups
            for g in range(groups):
                unit = ids[g * per_out : (g + 1) * per_out]
                if isinstance(x, Channels):
                    unit = np.concatenate([unit, x.ids[g * per_in : (g + 1) * per_in]])
                self.s.union_all(unit)
        self._out(ids, [(w, 0), (b if isinstance(b, ParamRef) else None, 0)])
        return Channels(ids, (1,))

    def linear(self, node: fx.Node) -> Any:
        x, w, b = self.v(_args(node)[0]), self._param(_args(node)[1], "weight"), self.v(_arg(node, 2, "bias"))
        out = _shape(node)
        if isinstance(x, Channels) and not x.heads and x.axes[0] != len(_shape(_args(node)[0])) - 1:
            raise Unsupported("its input channels are not on the last axis")
        self._consume(x, w, 1, node)
        ids = self.s.fresh(out[-1])
        self._out(ids, [(w, 0), (b if isinstance(b, ParamRef) else None, 0)])
        return Channels(ids, (len(out) - 1,))

    def addmm(self, node: fx.Node) -> Any:  # bias + x @ W, W stored [in, out] (transformers' Conv1D)
        b, x, w = self.v(_args(node)[0]), self.v(_args(node)[1]), self._param(_args(node)[2], "weight")
        if isinstance(x, Channels) and (x.heads or x.axes[0] != 1):
            raise Unsupported("its input channels are not on the last axis")
        self._consume(x, w, 0, node)
        ids = self.s.fresh(_shape(node)[-1])
        self._out(ids, [(w, 1), (b if isinstance(b, ParamRef) else None, len(b.dims) - 1 if b else 0)])
        return Channels(ids, (1,))

    def matmul(self, node: fx.Node) -> Any:
        a, b = self.v(_args(node)[0]), self.v(_args(node)[1])
        sa, sb, out = _shape(_args(node)[0]), _shape(_args(node)[1]), _shape(node)
        if isinstance(b, ParamRef) and len(sb) == 2:
            if isinstance(a, Channels) and (a.heads or a.axes[0] != len(sa) - 1):
                raise Unsupported("its input channels are not on the last axis")
            self._consume(a, b, 0, node)
            ids = self.s.fresh(out[-1])
            self._out(ids, [(b, 1)])
            return Channels(ids, (len(out) - 1,))
        if not (isinstance(a, Channels) and isinstance(b, Channels) and a.heads and b.heads):
            raise Unsupported("matrix product of tensors that are not attention heads")
        oa, ob = len(out) - len(sa), len(out) - len(sb)
        a_heads, b_heads = a.axes[0], b.axes[0]
        if a_heads is None or b_heads is None or a_heads >= len(sa) - 2 or a_heads + oa != b_heads + ob:
            raise Unsupported("attention heads are not a batch axis of the product")
        self.s.union(a.ids[:, 0], b.ids[:, 0])
        ah = a_heads + oa
        if b.axes[1] == len(sb) - 1:
            return Channels(b.ids, (ah, len(out) - 1))
        if a.axes[1] == len(sa) - 2:
            return Channels(a.ids, (ah, len(out) - 2))
        return Channels(a.ids, (ah, None))

    def sdpa(self, node: fx.Node) -> Any:
        q, k, v = (self.v(a) for a in _args(node)[:3])
        if not all(isinstance(c, Channels) and c.heads and c.axes[1] is not None for c in (q, k, v)):
            raise Unsupported("query, key and value are not all split into heads")
        if not q.ids.shape[0] == k.ids.shape[0] == v.ids.shape[0]:
            raise Unsupported("grouped-query attention (fewer key/value heads)")
        self.s.union(q.ids[:, 0], k.ids[:, 0])
        self.s.union(q.ids[:, 0], v.ids[:, 0])
        mask = _arg(node, 3, "attn_mask")
        ms = _shape(mask)
        if ms is not None and len(ms) >= 3 and ms[len(ms) - 3] == q.ids.shape[0] > 1:
            self.s.freeze(q.ids, f"per-head attention mask at {self.path(node)}")
        return v

    def embedding(self, node: fx.Node) -> Any:
        w = self._param(_args(node)[0], "weight")
        ids = self.s.fresh(_shape(node)[-1])
        self._out(ids, [(w, 1)])
        return Channels(ids, (len(_shape(node)) - 1,))

    def _norm(self, node: fx.Node, x: Any, refs: list[Any], axis: int) -> Any:
        if not isinstance(x, Channels):
            return None
        if x.heads or x.axes[0] != axis:
            raise Unsupported("normalizes an axis other than the channel axis")
        for i, r in enumerate(refs):
            p = self.v(r)
            if not isinstance(p, ParamRef):
                continue
            pd = p.dims[0]
            if pd is None or not self.s.add_member(
                (p.fqn, pd), p.shape[pd], x.ids, x.rep, "norm" if i == 0 else "other"
            ):
                raise Unsupported("norm parameters do not match the channels")
        return x

    def batch_norm(self, node: fx.Node) -> Any:
        out = self._norm(node, self.v(_args(node)[0]), list(_args(node)[1:5]), 1)
        return [out, None, None] if isinstance(node.meta.get("val"), (tuple, list)) else out

    def layer_norm(self, node: fx.Node) -> Any:
        x, nd = self.v(_args(node)[0]), len(_shape(_args(node)[0]))
        shape = _args(node)[1]
        if isinstance(x, Channels) and len(shape) != 1:
            if any(a is not None and a >= nd - len(shape) for a in x.axes):
                raise Unsupported("normalizes over several axes including the channels")
            out = x
        else:
            refs = [_args(node)[2]] if op_name(node) == "rms_norm" else list(_args(node)[2:4])
            out = self._norm(node, x, refs, nd - 1)
        return [out, None, None] if isinstance(node.meta.get("val"), (tuple, list)) else out

    def group_norm(self, node: fx.Node) -> Any:
        x = self.v(_args(node)[0])
        if isinstance(x, Channels):
            self.s.freeze(x.ids, f"GroupNorm at {self.path(node)} (group-wise pruning not implemented)")
        for r in _args(node)[2:4]:
            if isinstance(self.v(r), ParamRef):
                self.s.opaque.add(self.v(r).fqn)
        return x
