"""Parameters, non-zero parameters and MACs.

Modules that store weights in packed form (int4, binary, codebooks) report their own counts through
``shrink_param_count() -> (total, nonzero)``; their children are then not counted again.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from shrink._parametrize import baked_copy
from shrink.data import call_model

__all__ = ["count_params", "count_macs"]


def count_params(model: nn.Module) -> tuple[int, int]:
    """``(total, nonzero)`` parameter counts; parametrized (masked) weights count their effective values."""
    total = nonzero = 0
    skip: list[str] = []
    for name, module in model.named_modules():
        if any(name == s or name.startswith(s + ".") for s in skip):
            continue
        counter = getattr(module, "shrink_param_count", None)
        if counter is not None:
            t, n = counter()
            total, nonzero = total + t, nonzero + n
            skip.append(name)
            continue
        tensors = [p for _, p in module.named_parameters(recurse=False)]
        parametrizations = getattr(module, "parametrizations", None)
        if parametrizations is not None:
            skip.append(f"{name}.parametrizations" if name else "parametrizations")
            tensors += [getattr(module, pname) for pname in parametrizations]
        for t in tensors:
            total += t.numel()
            nonzero += int(torch.count_nonzero(t.detach()))
    return total, nonzero


def _recurrent_macs(module: nn.RNNBase, x: Any) -> int:
    """Multiply-accumulates of one call of a (batch_first or not, packed or not) LSTM / GRU / RNN on ``x``: per time
    step and sample, each layer and direction multiplies its input and its hidden state by ``gates x hidden``
    weights."""
    data = x.data if isinstance(x, nn.utils.rnn.PackedSequence) else x
    steps = data.shape[0] if isinstance(x, nn.utils.rnn.PackedSequence) else data.numel() // data.shape[-1]
    gates = {"LSTM": 4, "GRU": 3}.get(module.mode, 1)
    hidden, out = module.hidden_size, module.proj_size or module.hidden_size
    directions = 2 if module.bidirectional else 1
    macs = 0
    for layer in range(module.num_layers):
        width = module.input_size if layer == 0 else out * directions
        macs += directions * (gates * hidden * (width + out) + (hidden * out if module.proj_size else 0))
    return steps * macs


def count_macs(model: nn.Module, example_inputs: Any) -> int:
    """Multiply-accumulates of one forward pass on ``example_inputs`` (FLOPs / 2, PyTorch's flop counter). A
    recurrent layer the counter sees no FLOPs in (PyTorch's fused LSTM) is counted from its shapes."""
    model = baked_copy(model)  # parametrizations (masks) do not run under the flop counter
    was_training = model.training
    model.eval()
    extra: list[int] = []
    before: dict[int, int] = {}

    def enter(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        before[id(module)] = int(counter.get_total_flops())

    def leave(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> None:
        x = args[0] if args else kwargs.get("input")
        if x is not None and int(counter.get_total_flops()) == before[id(module)]:
            assert isinstance(module, nn.RNNBase)
            extra.append(_recurrent_macs(module, x))

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.RNNBase):
            hooks.append(m.register_forward_pre_hook(enter, with_kwargs=True))
            hooks.append(m.register_forward_hook(leave, with_kwargs=True))
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            call_model(model, example_inputs)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return int(counter.get_total_flops()) // 2 + sum(extra)
