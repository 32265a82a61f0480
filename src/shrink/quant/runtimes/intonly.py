"""Integer-only inference (Jacob et al., CVPR 2018): the whole network on integer codes, as an integer NPU runs it.

:func:`integer_model` reads a statically quantized model (``int8_static``, ``qat`` or ``zeroq`` output: int8 weights,
per-channel weight scales, activation grids) and builds an :class:`IntegerModel`: a list of integer steps —
conv / linear with int32 accumulation and fixed-point requantization (:mod:`shrink.quant.numerics.fixedpoint`),
fused ReLU as a clamp, max / average pooling, flatten, residual add (TFLite's scheme), grid changes — with no float
operation between the quantized input and the output codes. Floats appear only offline (deriving multipliers and
int32 biases while building) and at the two boundaries a user calls explicitly: :meth:`IntegerModel.quantize_input` and
:meth:`IntegerModel.dequantize_output`.

A value's grid is the one the quantized model gives it: a layer's output grid, else the input grid of the layers
that consume it (quantization is monotone, so max pooling, flatten and ReLU commute with it); a final layer without an
output grid returns its int32 accumulators. Values with no grid at all (e.g. a residual add's inputs) take a
min-max grid observed on ``calibration`` data.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from shrink.data import split_batch
from shrink.errors import ModelError, UnsupportedOpError
from shrink.quant.layers.convert import pair
from shrink.quant.layers.modules import QuantConv2d, QuantLinear, act_qparams_u8
from shrink.quant.numerics.fixedpoint import quantize_multiplier
from shrink.quant.numerics.qparams import QParams, qrange
from shrink.quant.runtimes.intonly_ops import (
    Grid,
    IntLayer,
    int_add,
    int_avg_pool2d,
    int_conv2d,
    int_linear,
    int_max_pool2d,
    int_regrid,
)

__all__ = ["IntegerModel", "integer_model", "agreement_within_one_step"]

_QUANT = (QuantConv2d, QuantLinear)
_PASS_MODULES = (nn.Identity, nn.Dropout, nn.Flatten, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_AVG = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_ADD = (operator.add, torch.add)
_RELU_FN = (F.relu, torch.relu)


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _QUANT) or super().is_leaf_module(m, qualname)


@dataclass
class _Step:
    name: str
    fn: Callable[..., np.ndarray]
    args: tuple[str, ...]


class IntegerModel:
    """A network as integer steps. ``run(codes) -> codes`` is integer-only; ``__call__`` adds the float
    boundaries (quantize the input, dequantize the output) so the model can be evaluated like a torch model."""

    shrink_runtime = "shrink integer-only reference (numpy)"
    shrink_execution = "int8 integer-only (int32 accumulators, fixed-point requantization)"

    def __init__(
        self,
        steps: list[_Step],
        input_name: str,
        input_grid: Grid,
        output_name: str,
        output_grid: Grid | None,
        output_acc_scale: np.ndarray | None,
    ) -> None:
        self.steps, self.input_name, self.input_grid = steps, input_name, input_grid
        self.output_name, self.output_grid, self.output_acc_scale = output_name, output_grid, output_acc_scale

    def quantize_input(self, x: torch.Tensor) -> np.ndarray:
        """Boundary (float → codes): the input on the first layer's grid, as int32 holding u8/i8 values."""
        g = self.input_grid
        q = torch.clamp(torch.round(x.detach().float() / g.scale) + g.zero_point, g.qmin, g.qmax)
        return q.to(torch.int32).numpy()

    def run(self, codes: np.ndarray) -> np.ndarray:
        """Integer codes in, integer codes (or int32 accumulators) out; every step takes and returns integers."""
        if not np.issubdtype(codes.dtype, np.integer):
            raise TypeError(f"IntegerModel.run takes integer codes, got {codes.dtype}")
        env = {self.input_name: codes}
        for step in self.steps:
            out = step.fn(*(env[a] for a in step.args))
            if not np.issubdtype(out.dtype, np.integer):
                raise AssertionError(f"integer-only step {step.name!r} produced {out.dtype}")
            env[step.name] = out
        return env[self.output_name]

    def dequantize_output(self, codes: np.ndarray) -> torch.Tensor:
        """Boundary (codes → float): real values of the output codes or accumulators."""
        if self.output_grid is not None:
            return torch.from_numpy(
                (codes.astype(np.float64) - self.output_grid.zero_point) * self.output_grid.scale
            ).float()
        assert self.output_acc_scale is not None
        return torch.from_numpy(codes.astype(np.float64) * self.output_acc_scale).float()

    def output_step(self) -> np.ndarray | float:
        """The real value of one output code step (per channel for accumulator outputs)."""
        return self.output_grid.scale if self.output_grid is not None else self.output_acc_scale  # type: ignore

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequantize_output(self.run(self.quantize_input(x)))


def _grid(qp: torch.Tensor, bits: int) -> Grid:
    lo, hi = qrange(bits, False)
    return Grid(float(qp[0]), int(qp[1]), lo, hi)


def _grid_of(qp: QParams) -> Grid:
    return Grid(float(qp.scale), int(qp.zero_point), qp.qmin, qp.qmax)


def _regrid_fn(src: Grid, dst: Grid) -> Callable[[np.ndarray], np.ndarray]:
    m0, shift = quantize_multiplier(src.scale / dst.scale)
    return lambda x: int_regrid(x, src, m0, shift, dst)


class _Builder:
    def __init__(self, model: nn.Module, calibration: Iterable[Any] | None) -> None:
        self.model = model.eval()
        self.mods = dict(model.named_modules())
        try:
            self.graph = _Tracer().trace(model)
        except Exception as exc:
            raise UnsupportedOpError(f"integer_model: cannot trace {type(model).__name__}: {exc}") from None
        self.calibration = calibration
        self.grids: dict[str, Grid | None] = {}  # None: int32 accumulators
        self.steps: list[_Step] = []

    def module(self, node: torch.fx.Node) -> nn.Module | None:
        return self.mods.get(node.target) if node.op == "call_module" else None  # type: ignore[arg-type]

    def passes_grid(self, node: torch.fx.Node) -> bool:
        mod = self.module(node)
        if mod is not None:
            return isinstance(mod, _PASS_MODULES)
        if node.op == "call_function":
            return node.target in (*_RELU_FN, torch.flatten)
        return node.op == "call_method" and node.target in ("flatten", "relu")

    def consumer_grid(self, node: torch.fx.Node) -> Grid | str | None:
        """The input grid of the first quantized layer ``node`` reaches through grid-preserving ops; "output"
        if it reaches the graph output that way; None otherwise."""
        frontier, seen = list(node.users), set()
        reaches_output = False
        while frontier:
            user = frontier.pop(0)
            if user in seen:
                continue
            seen.add(user)
            mod = self.module(user)
            if isinstance(mod, _QUANT):
                return _grid(mod.input_qparams, mod.act_bits)
            if user.op == "output":
                reaches_output = True
            elif self.passes_grid(user) and not isinstance(self.module(user), _AVG):
                frontier.extend(user.users)  # these commute with rounding and clamping; averaging does not
        return "output" if reaches_output else None

    def calibrated_grids(self, nodes: list[torch.fx.Node]) -> dict[str, Grid]:
        if self.calibration is None:
            names = ", ".join(n.name for n in nodes)
            raise ModelError(
                f"integer_model: values {names} have no quantization grid in the model; pass "
                "calibration data to observe one"
            )
        wanted = {n.name for n in nodes}
        lo: dict[str, torch.Tensor] = {}
        hi: dict[str, torch.Tensor] = {}
        gm = torch.fx.GraphModule(self.model, self.graph)

        class Watch(torch.fx.Interpreter):
            def run_node(self, n: torch.fx.Node) -> Any:
                out = super().run_node(n)
                if n.name in wanted:
                    lo[n.name] = torch.minimum(lo.get(n.name, out.min()), out.min())
                    hi[n.name] = torch.maximum(hi.get(n.name, out.max()), out.max())
                return out

        with torch.no_grad():
            for batch in self.calibration:
                Watch(gm).run(split_batch(batch)[0])
        return {name: _grid_of(act_qparams_u8(lo[name], hi[name])) for name in wanted}

    def resolve_grids(self) -> None:
        pending = []
        for node in self.graph.nodes:
            mod = self.module(node)
            if (
                node.op == "placeholder"
                or isinstance(mod, _QUANT)
                or (node.op == "call_function" and node.target in _ADD)
            ):
                if isinstance(mod, _QUANT) and mod.act_mode != "static":
                    raise UnsupportedOpError(
                        f"integer_model: layer {node.target!r} has {mod.act_mode!r} activations;"
                        " integer-only inference needs static grids"
                    )
                if isinstance(mod, _QUANT) and mod.quantize_output:
                    self.grids[node.name] = _grid(mod.output_qparams, mod.act_bits)
                    continue
                target = self.consumer_grid(node)
                if isinstance(target, Grid):
                    self.grids[node.name] = target
                elif target == "output" and isinstance(mod, _QUANT):
                    self.grids[node.name] = None
                else:
                    pending.append(node)
        if pending:
            self.grids.update(self.calibrated_grids(pending))

    def grid(self, node: torch.fx.Node) -> Grid | None:
        return self.grids[node.name]

    def layer(self, node: torch.fx.Node, mod: QuantConv2d | QuantLinear, src: Grid) -> str:
        expected = _grid(mod.input_qparams, mod.act_bits)
        first = node.args[0]
        assert isinstance(first, torch.fx.Node)  # a quantized layer's call takes its input node first
        arg = first.name
        if not src.same_as(expected):
            self.steps.append(_Step(f"{node.name}__regrid", _regrid_fn(src, expected), (arg,)))
            arg = f"{node.name}__regrid"
        out = self.grid(node)
        s_w = mod.weight_scale.double().numpy()
        acc_scale = expected.scale * s_w
        bias = mod.bias.detach().double().numpy() if mod.bias is not None else np.zeros_like(s_w)
        bias_q = np.clip(np.round(bias / acc_scale), -(2**31), 2**31 - 1).astype(np.int32)
        mult = [quantize_multiplier(a / out.scale) for a in acc_scale] if out is not None else [(0, 0)] * len(s_w)
        conv = isinstance(mod, QuantConv2d)
        if isinstance(mod, QuantConv2d):
            stride, padding = pair(mod.stride, "QuantConv2d.stride"), pair(mod.padding, "QuantConv2d.padding")
            dilation, groups = pair(mod.dilation, "QuantConv2d.dilation"), mod.groups
        else:  # IntLayer's defaults; a linear layer does not read them
            stride, padding, dilation, groups = (1, 1), (0, 0), (1, 1), 1
        spec = IntLayer(
            kind="conv" if conv else "linear",
            weight=mod.weight_int.numpy().astype(np.int32),
            bias=bias_q,
            input_zero_point=expected.zero_point,
            m0=np.array([m for m, _ in mult], dtype=np.int64),
            shift=np.array([s for _, s in mult], dtype=np.int64),
            out=out,
            relu=mod.relu,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
        )
        fn = int_conv2d if conv else int_linear
        self.steps.append(_Step(node.name, lambda x, spec=spec, fn=fn: fn(x, spec), (arg,)))
        if out is None:
            self.acc_scales[node.name] = acc_scale
        return node.name

    def build(self) -> IntegerModel:
        self.resolve_grids()
        self.acc_scales: dict[str, np.ndarray] = {}
        input_name = output_name = None
        for node in self.graph.nodes:
            mod = self.module(node)
            if node.op == "placeholder":
                if input_name is not None:
                    raise UnsupportedOpError("integer_model: models with more than one input are not supported")
                input_name = node.name
                continue
            if node.op == "output":
                out = node.args[0]
                if not isinstance(out, torch.fx.Node):
                    raise UnsupportedOpError("integer_model: the model must return a single tensor")
                output_name = out.name
                continue
            src = [self.grids.get(a.name) for a in node.args if isinstance(a, torch.fx.Node)]
            if isinstance(mod, _QUANT):
                if src[0] is None:
                    raise ModelError(f"integer_model: input of {node.target!r} is an accumulator, not a grid")
                self.layer(node, mod, src[0])
                continue
            if node.op == "call_function" and node.target in _ADD:
                self.add(node)
                continue
            if not self.passes_grid(node):
                what = type(mod).__name__ if mod is not None else str(node.target)
                raise UnsupportedOpError(
                    f"integer_model: operation {what!r} at {node.name!r} has no integer "
                    "implementation (supported: quantized conv/linear, ReLU, max/avg pooling, "
                    "flatten, add)"
                )
            self.grids[node.name] = src[0]
            self.steps.append(_Step(node.name, self.passthrough(node, mod, src[0]), (node.args[0].name,)))  # type: ignore[union-attr]
        assert input_name is not None and output_name is not None
        input_grid = self.grids[input_name]
        if input_grid is None:
            raise ModelError("integer_model: the model input reaches no quantized layer")
        out_grid = self.grids.get(output_name)
        return IntegerModel(
            self.steps,
            input_name,
            input_grid,
            output_name,
            out_grid,
            self.acc_scales.get(output_name) if out_grid is None else None,
        )

    def passthrough(self, node: torch.fx.Node, mod: nn.Module | None, grid: Grid | None) -> Callable:
        if isinstance(mod, nn.MaxPool2d):
            if mod.dilation not in (1, (1, 1)) or mod.ceil_mode:
                raise UnsupportedOpError(f"integer_model: MaxPool2d {node.target!r} with dilation/ceil_mode")
            k, s, p = (_pair(mod.kernel_size), _pair(mod.stride or mod.kernel_size), _pair(mod.padding))
            return lambda x: int_max_pool2d(x, k, s, p)
        if isinstance(mod, nn.AvgPool2d):
            if _pair(mod.padding) != (0, 0) or mod.ceil_mode:
                raise UnsupportedOpError(f"integer_model: AvgPool2d {node.target!r} with padding/ceil_mode")
            k, s = _pair(mod.kernel_size), _pair(mod.stride or mod.kernel_size)
            return lambda x: int_avg_pool2d(x, k, s)
        if isinstance(mod, nn.AdaptiveAvgPool2d):
            if _pair(mod.output_size) != (1, 1):
                raise UnsupportedOpError(f"integer_model: AdaptiveAvgPool2d {node.target!r} to a size other than 1")
            return lambda x: int_avg_pool2d(x, x.shape[2:], x.shape[2:])
        is_relu = isinstance(mod, nn.ReLU) or node.target in (*_RELU_FN, "relu")
        if is_relu:
            if grid is None:
                return lambda x: np.maximum(x, 0)
            zp = np.int32(grid.zero_point)
            return lambda x: np.maximum(x, zp)
        if isinstance(mod, nn.Flatten) or node.target in (torch.flatten, "flatten"):
            start = (
                mod.start_dim
                if isinstance(mod, nn.Flatten)
                else (node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0))
            )
            return lambda x: x.reshape(*x.shape[:start], -1)
        return lambda x: x  # Identity, Dropout (eval)

    def add(self, node: torch.fx.Node) -> None:
        a, b = node.args[:2]
        if not (isinstance(a, torch.fx.Node) and isinstance(b, torch.fx.Node)):
            raise UnsupportedOpError(f"integer_model: add of a constant at {node.name!r}")
        ga, gb, out = self.grids.get(a.name), self.grids.get(b.name), self.grids[node.name]
        if ga is None or gb is None or out is None:
            raise ModelError(f"integer_model: add {node.name!r} needs grids on both inputs and its output")
        twice = 2 * max(ga.scale, gb.scale)
        ma, mb = quantize_multiplier(ga.scale / twice), quantize_multiplier(gb.scale / twice)
        mo = quantize_multiplier(twice / ((1 << 20) * out.scale))
        self.steps.append(
            _Step(
                node.name, lambda x, y: int_add(x, y, ga.zero_point, gb.zero_point, ma, mb, mo, out), (a.name, b.name)
            )
        )


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def integer_model(model: nn.Module, calibration: Iterable[Any] | None = None) -> IntegerModel:
    """Build the integer-only executor of a statically quantized ``model`` (not modified)."""
    if not any(isinstance(m, _QUANT) for m in model.modules()):
        raise ModelError(f"integer_model: {type(model).__name__} has no quantized layer; quantize it statically first")
    return _Builder(model, calibration).build()


def agreement_within_one_step(int_model: IntegerModel, codes: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of outputs whose integer code is within one quantization step of ``reference`` (real values,
    e.g. ONNX Runtime's output of the same network)."""
    step = np.asarray(int_model.output_step(), dtype=np.float64)
    real = int_model.dequantize_output(codes).double().numpy()
    if int_model.output_acc_scale is not None:
        step = step.reshape([1] * (real.ndim - 1) + [-1])
    return float((np.abs(real - reference.astype(np.float64)) <= step * 1.0001).mean())
