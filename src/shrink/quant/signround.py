"""SignRound as its own stage (``signround``, Cheng et al. 2023): learn, block by block, whether each weight rounds
up or down and how far each group's scale clips, so that every block (a transformer layer) reproduces the float
model's block output on calibration data.

Where GPTQ rounds each Linear to match its own output, SignRound judges the rounding of all the Linears of a block
together, on the block's output: attention, normalisation and the residual path included. Each block learns on the
inputs it receives once the blocks before it are rounded, towards the float model's output of that block.

Each selected Linear becomes a :class:`PreparedLinear` whose float weight lies on a grid, one fp16 scale per
``group_size`` inputs (or per row) and on an ``asymmetric`` int4 grid a zero point with each, recorded on the layer;
``weight_only`` with the same ``bits``, ``group_size`` and ``asymmetric`` then stores exactly these codes. ``awq``
may come first (its input scaling is kept).
"""

from __future__ import annotations

import copy
import re
import time
from typing import ClassVar, Literal

import pydantic
import torch
from torch import nn
from tqdm.auto import tqdm

from shrink._parametrize import bake_parametrizations
from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.errors import ConfigError
from shrink.quant.algorithms.block_rounding import RoundingLinear, block_calls, block_outputs, learn_block
from shrink.quant.algorithms.group_rounding import check_asymmetric, dequantize_groups
from shrink.quant.layers.convert import check_weights, set_module
from shrink.quant.layers.prepared import prepare_for_rounding
from shrink.select import Selector

__all__ = ["SignRound", "signround", "find_blocks"]


@register("signround", family="quantize")
class SignRound(Config):
    """Learn each weight's rounding and each group's clipping so that every block reproduces its float output on
    calibration data (SignRound; the model stays float); list it before weight_only with the same bits,
    group_size and asymmetric (after awq, optional)."""

    prepares: ClassVar[bool] = True

    #: bits of the grid; the weight_only stage that follows must use the same
    bits: int = pydantic.Field(default=4, ge=2, le=8)
    #: inputs per scale (weight_only's groups, fp16 scales); None: one scale per row
    group_size: Literal[32, 64, 128] | None = 128
    #: signed-gradient steps per block, one calibration batch each (in turn)
    steps: int = pydantic.Field(default=200, ge=1)
    #: the first step's size (it decays linearly to 0); None: 1 / steps, the paper's setting
    lr: float | None = pydantic.Field(default=None, gt=0, le=0.5)
    #: the smallest factor a group's scale may shrink to (1.0: no clipping is learned)
    min_scale: float = pydantic.Field(default=0.5, gt=0, le=1)
    #: int4 only: a zero point per group, the group's maximum and minimum each clipped by a learned factor of its own
    asymmetric: bool = False
    selector: Selector = Selector(types=("Linear",))
    #: a regular expression matching the full names of the blocks whose outputs are learned, each holding some of
    #: the selected Linears (e.g. ``r"model\.layers\.\d+"``); None: the entries of the model's ModuleLists that
    #: hold selected Linears (a transformer's layers)
    blocks: str | None = None
    calibration_batches: int | None = pydantic.Field(default=None, ge=1)

    @pydantic.field_validator("blocks")
    @classmethod
    def _blocks_compile(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"blocks is not a regular expression: {err}") from None
        return pattern

    @pydantic.model_validator(mode="after")
    def _zero_points_int4(self) -> SignRound:
        check_asymmetric(self.asymmetric, self.bits)
        return self


def _inside(name: str, parent: str) -> bool:
    return name.startswith(parent + ".")


def find_blocks(model: nn.Module, layers: list[str], blocks: str | None) -> dict[str, list[str]]:
    """The blocks (name -> the names of ``layers`` inside it, in definition order) that SignRound learns: those
    whose full names match the regular expression ``blocks``, or (None) the entries of the model's ModuleLists.
    Every layer must lie in a block, and no block in another: ConfigError naming the first that does not."""
    if blocks is None:
        found: list[str] = []
        for name, module in model.named_modules():
            if isinstance(module, nn.ModuleList) and not any(_inside(name, b) for b in found):
                found += [f"{name}.{i}" if name else str(i) for i in range(len(module))]
        where = "the entries of the model's ModuleLists"
    else:
        found = [name for name, _ in model.named_modules() if name and re.fullmatch(blocks, name)]
        if not found:
            raise ConfigError(f"signround.blocks: {blocks!r} matches the name of no module of {type(model).__name__}")
        nested = [(a, b) for a in found for b in found if _inside(b, a)]
        if nested:
            raise ConfigError(f"signround.blocks: block {nested[0][1]!r} lies inside block {nested[0][0]!r}")
        where = "signround.blocks"
    members = {b: [n for n in layers if _inside(n, b)] for b in found}
    outside = [n for n in layers if not any(n in m for m in members.values())]
    if outside:
        raise ConfigError(
            f"signround: layer {outside[0]!r} lies in no block ({where}); name the blocks with a regular "
            "expression (blocks=...) or leave the layer out of the selector"
        )
    return {b: m for b, m in members.items() if m}


@implements(SignRound)
def signround(model: nn.Module, config: SignRound, ctx: Context) -> nn.Module:
    """Round the selected Linears' weights in place, block by block (``apply`` hands us a copy)."""
    bake_parametrizations(model)
    check_weights(model)
    layers = prepare_for_rounding(model, config.selector, "signround", config.group_size)
    blocks = find_blocks(model, list(layers), config.blocks)
    reference = copy.deepcopy(model).eval()
    model.eval()
    lr = config.lr if config.lr is not None else 1.0 / config.steps
    data, limit = ctx.calibration, config.calibration_batches
    errors = []
    start = time.perf_counter()
    for block_name, names in tqdm(blocks.items(), desc="signround", disable=not ctx.progress, leave=False):
        block = model.get_submodule(block_name)
        calls = block_calls(model, block, data, limit)
        targets = block_outputs(reference, reference.get_submodule(block_name), data, limit)
        rounding = {
            n: RoundingLinear(
                layers[n], config.bits, config.group_size or layers[n].in_features, config.min_scale, config.asymmetric
            )
            for n in names
        }
        for n, r in rounding.items():
            set_module(model, n, r)
        try:
            errors.append(learn_block(block, rounding, calls, targets, config.steps, lr))
        finally:
            for n in names:
                set_module(model, n, layers[n])
        with torch.no_grad():
            for n, r in rounding.items():
                codes, scale, zero = r.codes()
                layers[n].weight.copy_(dequantize_groups(codes, scale, zero).to(layers[n].weight.dtype))
                layers[n].set_grid(scale, config.bits, config.group_size, zero)
    grid = "one scale per row" if config.group_size is None else f"group {config.group_size}"
    grid = f"asymmetric {grid}" if config.asymmetric else grid
    before, after = (sum(e[i] for e in errors) / len(errors) for i in (0, 1))
    ctx.notes.append(
        f"signround: {len(layers)} Linear layers in {len(blocks)} blocks rounded onto {config.bits}-bit {grid} grids, "
        f"{config.steps} signed-gradient steps per block in {time.perf_counter() - start:.0f} s; block output "
        f"error on calibration data {before:.3g} at round-to-nearest, {after:.3g} learned"
    )
    return model
