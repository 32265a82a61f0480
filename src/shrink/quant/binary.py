"""Binarization as a quantize config: BNN / XNOR-Net training, then 1-bit packed storage.

The selected conv / linear layers get ±1 weights with per-output-channel ``α = mean|W|`` and ±1 inputs (learned
per-channel thresholds, initialised at each channel's calibration mean so about half the inputs are +1). The first
and last selected layers stay at 8-bit weights by default (binarizing them costs most accuracy for the least
size), trained with 8-bit fake quantization and stored as int8. The network is trained with ``shrink.train.fit``,
then every binary layer is converted to its packed form (1 bit per weight on disk).
"""

from __future__ import annotations

from typing import Literal

import pydantic
import torch
from torch import nn
from torch.nn.utils import parametrize

from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.data import Batches, call_model, split_batch
from shrink.errors import DataError, UnsupportedOpError
from shrink.quant.layers.binary_layers import BinaryConv2d, BinaryLinear, PackedBinaryConv2d, PackedBinaryLinear
from shrink.quant.layers.convert import check_weights, quantized_layer, set_module
from shrink.quant.numerics.qparams import qparams_for_tensor
from shrink.quant.numerics.ste import fake_quantize_ste
from shrink.select import Selector, select_modules
from shrink.train.loop import fit

__all__ = ["Binarize", "binarize", "binarize_layers", "pack_binary_layers", "Int8WeightFakeQuant"]


@register("binarize", family="quantize")
class Binarize(Config):
    """Binarize weights (and inputs) of the selected layers and train the network (BNN / XNOR-Net)."""

    selector: Selector = Selector()
    #: keep the first and last selected layers at edge_bits-bit weights instead of binarizing them
    keep_first_last: bool = True
    #: bits of the first and last layers' weights when keep_first_last (fake-quantized in training, stored int8)
    edge_bits: int = pydantic.Field(8, ge=2, le=8)
    #: binarize the binary layers' inputs to ±1 at learned per-channel thresholds (False: float inputs)
    binarize_activations: bool = True
    epochs: int = pydantic.Field(15, ge=0)
    lr: float = pydantic.Field(2e-3, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    calibration_batches: int = pydantic.Field(4, ge=1)


class Int8WeightFakeQuant(nn.Module):
    """Parametrization: per-output-channel symmetric ``bits``-bit fake quantization of a weight (clipped STE)."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return fake_quantize_ste(w, qparams_for_tensor(w.detach(), self.bits, symmetric=True, axis=0))


def binarize_layers(model: nn.Module, config: Binarize) -> tuple[list[str], list[str]]:
    """Swap the selected layers for their binary training form in place; returns (binary names, 8-bit names)."""
    chosen = select_modules(model, config.selector, where="binarize.selector")
    names = list(chosen)
    edges = [names[0], names[-1]] if config.keep_first_last else []
    binary = [n for n in names if n not in edges]
    for name in binary:
        layer = chosen[name]
        if isinstance(layer, nn.Conv2d):
            set_module(model, name, BinaryConv2d.from_float(layer, config.binarize_activations))
        elif isinstance(layer, nn.Linear):
            set_module(model, name, BinaryLinear.from_float(layer, config.binarize_activations))
        else:
            raise DataError(f"binarize: layer {name!r} is a {type(layer).__name__}; only Conv2d and Linear binarize")
    for name in dict.fromkeys(edges):
        parametrize.register_parametrization(chosen[name], "weight", Int8WeightFakeQuant(config.edge_bits))
    return binary, list(dict.fromkeys(edges))


def _binary_layer(model: nn.Module, name: str) -> BinaryConv2d | BinaryLinear:
    layer = model.get_submodule(name)
    assert isinstance(layer, (BinaryConv2d, BinaryLinear))  # binarize_layers swapped every binary name for one
    return layer


@torch.no_grad()
def _init_thresholds(model: nn.Module, binary: list[str], data: Batches) -> None:
    """Each binarized input's threshold := its per-channel mean on calibration data, layer by layer (upstream
    layers already binarized, so each threshold sees the inputs it will get)."""
    layers = {n: _binary_layer(model, n) for n in binary}
    saved = {n: m.binarize_input for n, m in layers.items()}
    model.eval()
    try:
        for m in layers.values():
            m.binarize_input = False
        for name, layer in layers.items():
            total, count = torch.zeros(()), 0
            channel_dim = layer.channel_dim  # 1 for a conv's input, -1 for a Linear's

            def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
                nonlocal total, count
                x = args[0]
                channel = x.dim() - 1 if channel_dim == -1 else channel_dim  # noqa: B023  (runs in this iteration)
                total = total + x.sum(dim=[d for d in range(x.dim()) if d != channel])
                count += x.numel() // x.shape[channel]

            handle = layer.register_forward_pre_hook(hook)
            try:
                for batch in data:
                    call_model(model, split_batch(batch)[0])
            finally:
                handle.remove()
            layer.threshold.copy_(total / max(count, 1))
            layer.binarize_input = saved[name]
    finally:
        for n, m in layers.items():
            m.binarize_input = saved[n]


def pack_binary_layers(model: nn.Module) -> nn.Module:
    """Replace every trained binary layer by its 1-bit packed form, in place."""
    for name, module in list(model.named_modules()):
        if isinstance(module, BinaryConv2d):
            set_module(model, name, PackedBinaryConv2d.from_binary(module))
        elif isinstance(module, BinaryLinear):
            set_module(model, name, PackedBinaryLinear.from_binary(module))
    return model


@torch.no_grad()
def _edges_to_int8(model: nn.Module, edges: list[str], bits: int) -> None:
    """Store the 8-bit edge layers as int8 weights (per-channel scales, float activations)."""
    for name in edges:
        layer = model.get_submodule(name)
        if not isinstance(layer, (nn.Linear, nn.Conv2d)):  # the error quantized_layer raises, before .weight
            raise UnsupportedOpError(f"cannot quantize a {type(layer).__name__}")
        weight = layer.weight.detach().clone()  # the fake-quantized value: already on the grid
        q = quantized_layer(layer, bits, "none")
        q.set_weight(weight, qparams_for_tensor(weight, bits, symmetric=True, axis=0))
        set_module(model, name, q)


def binarize(model: nn.Module, config: Binarize, ctx: Context) -> nn.Module:
    """Binarize, train on ``ctx.train``, pack (in place; ``apply`` hands us a copy)."""
    if ctx.train is None:
        raise DataError("binarize: needs training data (train=...)")
    check_weights(model)
    binary, edges = binarize_layers(model, config)
    calib = Batches(ctx.calibration if ctx.calibration is not None else ctx.train, limit=config.calibration_batches)
    if config.binarize_activations:
        _init_thresholds(model, binary, calib)
    fit(
        model,
        ctx.train,
        epochs=config.epochs,
        lr=config.lr,
        optimizer=config.optimizer,
        checkpoint_dir=ctx.checkpoint_dir,
        progress=ctx.progress,
        desc="binarize",
    )
    pack_binary_layers(model)
    _edges_to_int8(model, edges, config.edge_bits)
    model.eval()
    setattr(model, "shrink_execution", PackedBinaryConv2d.shrink_execution)  # noqa: B010  (nn.Module types attributes as Tensor | Module)
    acts = "±1 inputs" if config.binarize_activations else "float inputs"
    ctx.notes.append(
        f"binarize: {len(binary)} layers with 1-bit packed weights and {acts} ({', '.join(binary)}); "
        f"{len(edges)} edge layers with {config.edge_bits}-bit weights ({', '.join(edges) or 'none'}); "
        f"trained {config.epochs} epochs"
    )
    ctx.notes.append("binarize: figures are simulated (bits unpacked to ±1 floats, no XNOR-popcount kernel)")
    return model


implements(Binarize)(binarize)
