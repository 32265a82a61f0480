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


def count_macs(model: nn.Module, example_inputs: Any) -> int:
    """Multiply-accumulates of one forward pass on ``example_inputs`` (FLOPs / 2, PyTorch's flop counter)."""
    model = baked_copy(model)  # parametrizations (masks) do not run under the flop counter
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            call_model(model, example_inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2
