"""A model's repeated blocks (decoder layers), and the input statistics of one block measured on the model whose
earlier blocks are already quantized -- what sequential GPTQ for LLMs reads.

Measuring block ``k`` by running the whole model up to it costs ``k`` block forwards per window, so a model of
``L`` blocks costs ``L²/2`` of them in all. :class:`BlockInputs` instead records what each window calls every
block with (one forward of the float model), and after block ``k`` is quantized, runs that block alone to get
block ``k + 1``'s input: one block forward per window and block. That holds for a plain stack of blocks, each
reading the output of the one before (Llama and most decoders); it is checked on the first window before it is
relied on, and any other model is measured by full forwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from shrink.data import call_model
from shrink.quant.algorithms.gptq import execution_groups, input_hessians

__all__ = ["block_of", "decoder_blocks", "BlockInputs"]

#: the positional and keyword arguments of one call of a block
Call = tuple[tuple[Any, ...], dict[str, Any]]


def block_of(name: str) -> str | None:
    """The repeated block a layer belongs to: its name up to the last index of a ModuleList
    (``model.layers.3.mlp.up_proj`` -> ``model.layers.3``); None for a layer in no block (``lm_head``)."""
    parts = name.split(".")
    index = max((i for i, p in enumerate(parts) if p.isdigit()), default=None)
    return None if index is None else ".".join(parts[: index + 1])


def decoder_blocks(model: nn.Module, layers: Mapping[str, nn.Module], windows: list) -> list[list[str]]:
    """``layers`` in the order the first calibration window runs them, one group per block (:func:`block_of`);
    consecutive layers in no block are grouped alone."""
    order = [n for group in execution_groups(model, layers, windows) for n in group]
    blocks: list[tuple[str | None, list[str]]] = []
    for name in order:
        key = block_of(name)
        if blocks and key is not None and blocks[-1][0] == key:
            blocks[-1][1].append(name)
        else:
            blocks.append((key, [name]))
    return [names for _, names in blocks]


class _Reached(Exception):
    """Ends a recording forward once the last block has been called."""


@torch.no_grad()
def block_calls(model: nn.Module, blocks: Sequence[nn.Module], windows: list) -> list[list[Call]]:
    """What each window calls each of ``blocks`` with: ``calls[b][w]`` (one forward per window, ended when the
    last block is reached)."""
    calls: list[list[Call]] = [[] for _ in blocks]

    def hook(index: int):  # noqa: ANN202
        def pre(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            calls[index].append((args, dict(kwargs)))
            if index == len(blocks) - 1:
                raise _Reached

        return pre

    handles = [b.register_forward_pre_hook(hook(i), with_kwargs=True) for i, b in enumerate(blocks)]
    try:
        for window in windows:
            with contextlib.suppress(_Reached):
                call_model(model, window)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _hidden(call: Call) -> Any:
    args, kwargs = call
    return args[0] if args else kwargs.get("hidden_states")


def _with_hidden(call: Call, hidden: torch.Tensor) -> Call:
    args, kwargs = call
    return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})


def _output(block: nn.Module, call: Call) -> Any:
    out = block(*call[0], **call[1])
    return out[0] if isinstance(out, tuple) else out


class _Replay(nn.Module):
    """``block`` on its recorded calls: ``forward(i)`` makes call ``i`` again."""

    def __init__(self, block: nn.Module, calls: list[Call]) -> None:
        super().__init__()
        self.block, self.calls = block, calls

    def forward(self, index: torch.Tensor) -> Any:
        args, kwargs = self.calls[int(index)]
        return self.block(*args, **kwargs)


class BlockInputs:
    """The input statistics of ``model``'s blocks (groups from :func:`decoder_blocks`), measured in order, each on
    the model whose earlier blocks have been quantized in place; call :meth:`advance` after quantizing a block."""

    def __init__(self, model: nn.Module, groups: list[list[str]], windows: list) -> None:
        self.model, self.windows = model, windows
        keys = [block_of(g[0]) for g in groups]
        self.order = [k for k in keys if k is not None]
        self.modules = {k: model.get_submodule(k) for k in self.order}
        tail = keys[len(self.order) :]  # layers in no block (lm_head) may only come after the blocks
        self.calls: dict[str, list[Call]] = {}
        plain = len(set(self.order)) == len(self.order) and keys[: len(self.order)] == self.order
        if self.order and plain and all(k is None for k in tail):
            recorded = block_calls(model, list(self.modules.values()), windows)
            self.calls = dict(zip(self.order, recorded, strict=True))
            if not self._chained():
                self.calls = {}

    @torch.no_grad()
    def _chained(self) -> bool:
        """Whether every block reads exactly the output of the one before, on the first window."""
        for key, after in zip(self.order, self.order[1:], strict=False):
            out, expected = _output(self.modules[key], self.calls[key][0]), _hidden(self.calls[after][0])
            if not (isinstance(out, torch.Tensor) and isinstance(expected, torch.Tensor)):
                return False
            if out.shape != expected.shape or not torch.allclose(out, expected, rtol=1e-5, atol=1e-6):
                return False
        return all(len(c) == len(self.windows) for c in self.calls.values())

    def hessians(
        self, group: list[str], layers: Mapping[str, nn.Module], scales: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """:func:`~shrink.quant.algorithms.gptq.input_hessians` of ``layers`` (one group's) on the model as it
        is now: by replaying their block on its recorded inputs, or by full forwards where there is none."""
        key = block_of(group[0])
        if key is None or key not in self.calls:
            return input_hessians(self.model, layers, self.windows, input_scales=scales, stop_after=group[-1])
        replay = _Replay(self.modules[key], self.calls[key])
        return input_hessians(replay, layers, [torch.tensor(i) for i in range(len(self.windows))], input_scales=scales)

    @torch.no_grad()
    def advance(self, group: list[str]) -> None:
        """``group``'s block is quantized now: the next block's recorded inputs become its outputs."""
        key = block_of(group[0])
        if key is None or key not in self.calls:
            return
        calls = self.calls.pop(key)
        index = self.order.index(key)
        if index + 1 < len(self.order):
            after = self.order[index + 1]
            block = self.modules[key]
            self.calls[after] = [
                _with_hidden(c, _output(block, own)) for c, own in zip(self.calls[after], calls, strict=True)
            ]
