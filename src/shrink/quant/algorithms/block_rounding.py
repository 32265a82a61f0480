"""Rounding learned block by block (SignRound, Cheng et al. 2023, "Optimize weight rounding via signed gradient
descent for the quantization of LLMs"): each weight may round up or down (an offset ``v`` in ``[-0.5, 0.5]`` added
before rounding) and each group's scale may shrink (a factor in ``[min_scale, 1]`` of its largest weight's scale);
both are learned with signed gradient steps so that a whole block (a transformer layer) reproduces the float
block's output on calibration data, rather than each Linear its own.

* :class:`RoundingLinear` stands in for a Linear (a ``PreparedLinear``) while its block learns: the weight is rounded in
  the forward pass with a straight-through gradient, the layer's input smoothing (AWQ) kept.
* :func:`learn_block` runs the signed-gradient steps of one block on recorded calls of it and their float outputs.
* :func:`block_calls` records the calls a block receives on calibration data (its arguments as the model passes
  them) and :func:`block_outputs` the outputs a block gives, each forward ended as soon as the block has run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shrink.data import call_model
from shrink.errors import DataError, ModelError
from shrink.quant.algorithms.group_rounding import SCALE_DTYPE, GroupCodes, stored_scale
from shrink.quant.algorithms.input_rows import calibration_inputs

__all__ = ["BlockCall", "RoundingLinear", "block_calls", "block_outputs", "learn_block"]


@dataclass
class BlockCall:
    """One call of a block: its positional and keyword arguments, and which of its output rows are real tokens
    (``(batch, seq)`` bool from the batch's ``attention_mask``; None: all)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    mask: torch.Tensor | None

    def run(self, block: nn.Module) -> torch.Tensor:
        """The block's main output (the first tensor it returns) on this call."""
        out = first_tensor(block(*self.args, **self.kwargs))
        if out is None:
            raise ModelError(f"signround: block {type(block).__name__} returned no tensor")
        return out


def first_tensor(out: Any) -> torch.Tensor | None:
    """A block's main output: the tensor it returns, or the first item of the tuple it returns."""
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    return out if isinstance(out, torch.Tensor) else None


class _BlockDone(Exception):
    """Ends a calibration forward once the block of interest has run."""


def _mask(inputs: Any) -> torch.Tensor | None:
    mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
    return mask.bool() if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None


def _each_batch(
    model: nn.Module, block: nn.Module, data: Any, limit: int | None, hook: Callable[..., Any], *, after: bool
) -> None:
    """Run ``model`` on each calibration batch with ``hook(inputs)`` on ``block`` (a forward hook if ``after``, else
    a pre-hook, both with keyword arguments), which ends the forward; a batch on which the block never runs, or no
    batch at all, is an error."""
    batches = 0
    for inputs in calibration_inputs(data, limit):
        if after:
            handle = block.register_forward_hook(hook(inputs), with_kwargs=True)
        else:
            handle = block.register_forward_pre_hook(hook(inputs), with_kwargs=True)
        done = False
        try:
            with torch.no_grad():
                call_model(model, inputs)
        except _BlockDone:
            done = True
        finally:
            handle.remove()
        if not done:
            raise DataError(f"signround: block {type(block).__name__} did not run on a calibration batch")
        batches += 1
    if not batches:
        raise DataError("signround: the calibration data holds no batch")


#: keyword arguments through which a decoder layer reads or extends a key/value cache (and cache objects, wherever
#: they are passed): a recorded call runs again and again, so it must not touch one
_CACHE_ARGUMENTS = ("past_key_value", "past_key_values", "layer_past")


def _is_cache(value: Any) -> bool:  # noqa: ANN401
    """Whether ``value`` is a key/value cache object (transformers' ``Cache`` classes: ``DynamicCache``, ...), which
    some layers (GPT-2's) receive as a positional argument."""
    return type(value).__name__.endswith("Cache") and callable(getattr(value, "update", None))


def _without_cache(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    kept = {k: (None if k in _CACHE_ARGUMENTS or _is_cache(v) else v) for k, v in kwargs.items()}
    if "use_cache" in kept:
        kept["use_cache"] = False
    return tuple(None if _is_cache(a) else a for a in args), kept


def block_calls(model: nn.Module, block: nn.Module, data: Any, limit: int | None) -> list[BlockCall]:
    """The calls ``block`` receives in ``model`` on the first ``limit`` (None: all) calibration batches."""
    calls: list[BlockCall] = []

    def hook(inputs: Any) -> Callable[..., Any]:
        def pre(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            calls.append(BlockCall(*_without_cache(args, kwargs), _mask(inputs)))
            raise _BlockDone

        return pre

    _each_batch(model, block, data, limit, hook, after=False)
    return calls


def block_outputs(model: nn.Module, block: nn.Module, data: Any, limit: int | None) -> list[torch.Tensor]:
    """``block``'s main output in ``model`` on the first ``limit`` (None: all) calibration batches."""
    outputs: list[torch.Tensor] = []

    def hook(inputs: Any) -> Callable[..., Any]:
        def post(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
            tensor = first_tensor(out)
            if tensor is None:
                raise ModelError(f"signround: block {type(module).__name__} returned no tensor")
            outputs.append(tensor.detach())
            raise _BlockDone

        return post

    _each_batch(model, block, data, limit, hook, after=True)
    return outputs


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN401
        return torch.round(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN401
        return grad


class RoundingLinear(nn.Module):
    """A Linear (its ``input_smooth`` applied first, if it has one: a ``PreparedLinear``) whose weight is rounded
    onto a ``bits`` grid, one scale per ``group`` inputs, with learnable rounding offsets ``v`` and range factors.

    Symmetric: ``q = clamp(round(w / s + v), -2**(b-1), 2**(b-1)-1)``, ``s = factor * max|w_group| / (2**(b-1)-1)``.
    ``asymmetric``: the group's maximum and minimum (zero included) each shrink by a factor of their own,
    ``s = (factor * max - factor_low * min) / (2**b - 1)``, and a zero point ``z = round(-2**(b-1) - factor_low * min
    / s)`` shifts the codes: ``q = clamp(round(w / s + v) + z, ...)``, each weight ``(q - z) * s``.
    """

    def __init__(self, layer: nn.Linear, bits: int, group: int, min_scale: float, asymmetric: bool = False) -> None:
        super().__init__()
        self.layer, self.min_scale = layer, min_scale
        self.qmin, self.qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        out, width = layer.weight.shape
        self.groups = layer.weight.detach().float().reshape(out, width // group, group)
        if asymmetric:  # the group's maximum and minimum, each shrunk by its factor
            self.high = self.groups.amax(-1, keepdim=True).clamp(min=0)
            self.low = self.groups.amin(-1, keepdim=True).clamp(max=0)
        else:  # the scale that keeps the group's largest magnitude, shrunk by the factor
            self.base = (self.groups.abs().amax(-1, keepdim=True) / self.qmax).clamp(min=torch.finfo(SCALE_DTYPE).tiny)
        per_group = torch.ones_like(self.groups[..., :1])
        self.offset = nn.Parameter(torch.zeros_like(self.groups))
        self.factor = nn.Parameter(per_group.clone())
        self.factor_low = nn.Parameter(per_group) if asymmetric else None

    def learned(self) -> list[tuple[nn.Parameter, float, float]]:
        """The learned parameters with the range each is kept in."""
        ranges = [(self.offset, -0.5, 0.5), (self.factor, self.min_scale, 1.0)]
        return ranges + ([(self.factor_low, self.min_scale, 1.0)] if self.factor_low is not None else [])

    def _grid(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scales ``[out, in / group, 1]`` and (asymmetric) zero points from the current factors."""
        if self.factor_low is None:
            return self.base * self.factor, None
        low = self.low * self.factor_low
        scale = ((self.high * self.factor - low) / (self.qmax - self.qmin)).clamp(min=torch.finfo(SCALE_DTYPE).tiny)
        return scale, self._zero(scale)

    def _zero(self, scale: torch.Tensor) -> torch.Tensor:
        """The zero points on ``scale``. No gradient flows through them: through a straight-through rounding of the
        zero point the factors kept shrinking while the block's error grew (a Linear + GELU block, 150 steps: +3%;
        without it: -23%); the factors still learn through the scale."""
        assert self.factor_low is not None
        with torch.no_grad():
            return torch.round(self.qmin - self.low * self.factor_low / scale).clamp(self.qmin, self.qmax)

    def _codes(
        self, scale: torch.Tensor, zero: torch.Tensor | None, rounding: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Codes ``[out, in / group, group]`` (float) of the weights on ``scale`` (and ``zero``), offsets added
        before ``rounding``."""
        codes = rounding(self.groups / scale + self.offset)
        return (codes if zero is None else codes + zero).clamp(self.qmin, self.qmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        smooth = getattr(self.layer, "input_smooth", None)
        if smooth is not None:
            x = x * smooth.to(x.dtype)
        scale, zero = self._grid()
        codes = self._codes(scale, zero, _RoundSTE.apply)  # type: ignore[arg-type]
        weight = ((codes if zero is None else codes - zero) * scale).reshape(self.layer.weight.shape)
        return F.linear(x, weight.to(x.dtype), self.layer.bias)

    @torch.no_grad()
    def step(self, lr: float) -> None:
        """One signed-gradient step of the offsets and factors, each kept in its range."""
        for param, low, high in self.learned():
            if param.grad is not None:
                param.sub_(lr * param.grad.sign()).clamp_(low, high)
                param.grad = None

    @torch.no_grad()
    def codes(self) -> GroupCodes:
        """The learned codes ``[out, in]`` (int8) on the learned scales ``[out, in / group]`` as stored (fp16) and,
        asymmetric, the zero points ``[out, in / group]`` that go with them."""
        scale = stored_scale(self._grid()[0], SCALE_DTYPE)
        zero = None if self.factor_low is None else self._zero(scale)
        codes = self._codes(scale, zero, torch.round).reshape(self.layer.weight.shape)
        return GroupCodes(codes.to(torch.int8), scale.squeeze(-1), None if zero is None else zero.squeeze(-1))


def _loss(out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    diff = (out.float() - target.float()) ** 2
    if mask is not None and diff.dim() >= 3 and tuple(diff.shape[:2]) == tuple(mask.shape):
        return diff[mask].mean()
    return diff.mean()


def learn_block(
    block: nn.Module,
    layers: dict[str, RoundingLinear],
    calls: Sequence[BlockCall],
    targets: Sequence[torch.Tensor],
    steps: int,
    lr: float,
) -> tuple[float, float]:
    """``steps`` signed-gradient steps (learning rate decaying linearly from ``lr`` to 0), one recorded call per step
    in turn, of the offsets and factors of ``layers`` (already in place in ``block``) towards ``targets``: the mean
    squared error over real tokens. Returns the mean loss over all calls before and after."""

    def mean_loss() -> float:
        with torch.no_grad():
            return sum(_loss(c.run(block), t, c.mask).item() for c, t in zip(calls, targets, strict=True)) / len(calls)

    learned = {id(p) for layer in layers.values() for p, _, _ in layer.learned()}
    frozen = [p for p in block.parameters() if p.requires_grad and id(p) not in learned]
    for p in frozen:
        p.requires_grad_(False)
    try:
        before = mean_loss()
        for i in range(steps):
            call = calls[i % len(calls)]
            _loss(call.run(block), targets[i % len(calls)], call.mask).backward()
            for layer in layers.values():
                layer.step(lr * (1 - i / steps))
        return before, mean_loss()
    finally:
        for p in frozen:
            p.requires_grad_(True)
