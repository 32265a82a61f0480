"""Weight-only int8 / int4 for LLM decoding, on PyTorch's CPU integer-weight kernels
(:mod:`shrink.quant.runtimes.torch_weight_only`).

Decoding at batch 1 is memory-bound: every token reads every weight once. Storing weights as int8 (per output
channel scales) or int4 (symmetric, one scale per ``group_size`` inputs) cuts the bytes read 4x / 8x.

Codes come from round-to-nearest or from GPTQ (column-wise error feedback under the layer's input second moments),
optionally after AWQ's activation-aware input scaling (``method="awq"`` / ``"awq+gptq"``): each layer then keeps a
per-input-channel factor that multiplies its input before the kernel.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from shrink.errors import ConfigError
from shrink.eval.language import perplexity
from shrink.llm.blocks import BlockInputs, decoder_blocks
from shrink.quant.algorithms.gptq import input_hessians
from shrink.quant.algorithms.group_rounding import awq_input_scales, gptq_group_codes, rtn_codes
from shrink.quant.algorithms.input_rows import layer_input_rows
from shrink.quant.awq import AWQ_ROWS
from shrink.quant.runtimes.torch_weight_only import ACT_DTYPE, Int4WeightLinear, Int8WeightLinear

__all__ = [
    "Int8WeightLinear",
    "Int4WeightLinear",
    "METHODS",
    "rtn_codes",
    "gptq_group_codes",
    "quantize_weight_only",
    "choose_act_order",
    "held_out_choice",
]

#: how codes are chosen: round to nearest, GPTQ, and either after AWQ input scaling
Method = Literal["rtn", "gptq", "awq", "awq+gptq"]
METHODS: tuple[str, ...] = ("rtn", "gptq", "awq", "awq+gptq")


def _linears(model: nn.Module, include_lm_head: bool) -> dict[str, nn.Linear]:
    found = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    if not include_lm_head:
        found.pop("lm_head", None)
    if not found:
        raise ConfigError("quantize_weight_only: the model has no nn.Linear layer")
    return found


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def _awq_factors(
    model: nn.Module, layers: dict[str, nn.Linear], windows: list, bits: dict[str, int], group: int, asym: bool
) -> dict:
    rows = layer_input_rows(model, layers, windows, AWQ_ROWS)
    out = {}
    for name, layer in layers.items():
        w, four = layer.weight.detach().float(), bits[name] == 4
        out[name] = awq_input_scales(rows[name], w, bits[name], group if four else w.shape[1], asym and four)[0]
    return out


def _check_settings(
    bits: int, lm_head_bits: int | None, method: str, calibrated: bool, clip: bool, sequential: bool, asym: bool
) -> None:
    if bits not in (4, 8) or lm_head_bits not in (None, 4, 8):
        raise ConfigError(f"quantize_weight_only: bits must be 4 or 8, got {bits} (lm_head_bits {lm_head_bits})")
    if method not in METHODS:
        raise ConfigError(f"quantize_weight_only: method must be one of {METHODS}, got {method!r}")
    if (method != "rtn" or clip) and not calibrated:
        what = "clip=True" if method == "rtn" else f"method={method!r}"
        raise ConfigError(f"quantize_weight_only: {what} needs calibration token windows")
    if sequential and not (method.endswith("gptq") or clip):
        raise ConfigError(
            f"quantize_weight_only: sequential=True needs GPTQ or clip; method {method!r} reads no inputs"
        )
    if asym and 4 not in (bits, lm_head_bits):
        raise ConfigError("quantize_weight_only: asymmetric=True applies to int4 layers; there are none")


def _widths(layers: dict[str, nn.Linear], bits: int, lm_head_bits: int | None, group_size: int) -> dict[str, int]:
    """Each layer's bit width (``lm_head`` may have its own), every layer's inputs checked against its group."""
    width = {n: (lm_head_bits or bits) if n == "lm_head" else bits for n in layers}
    for name, layer in layers.items():
        group = layer.in_features if width[name] == 8 else group_size
        if layer.in_features % group:
            raise ConfigError(f"quantize_weight_only: {name} has {layer.in_features} inputs, not a multiple of {group}")
    return width


@torch.no_grad()
def quantize_weight_only(
    model: nn.Module,
    bits: Literal[4, 8],
    group_size: int = 64,
    method: Method = "rtn",
    calibration: Iterable[torch.Tensor] | None = None,
    include_lm_head: bool = True,
    lm_head_bits: Literal[4, 8] | None = None,
    act_order: bool | Literal["auto"] = False,
    clip: bool = False,
    sequential: bool = False,
    asymmetric: bool = False,
) -> nn.Module:
    """A copy of ``model`` whose Linears (and untied ``lm_head``) run as int8 (per-channel) or int4 (symmetric,
    ``group_size`` inputs per scale) weight-only layers on PyTorch's packed-weight kernels. The input is unchanged.
    ``asymmetric``: the int4 layers' groups get zero points too (each group's range spread over all 16 levels;
    int8 layers stay symmetric: the int8 kernel has no zero point).

    ``method``: ``"rtn"`` (round to nearest on each group's grid), ``"gptq"``, ``"awq"`` (AWQ input scales,
    then round to nearest) or ``"awq+gptq"``; all but ``"rtn"`` read ``calibration`` token windows (1-D or [1, n]).
    ``lm_head_bits``: another width for ``lm_head`` (e.g. 8 under int4 layers: the output projection of a small
    model is the layer most sensitive to 4 bits); None keeps ``bits``. ``act_order``: GPTQ rounds the inputs with
    the most energy first, on group scales fixed beforehand (methods with GPTQ only); ``"auto"`` decides on the
    calibration windows alone (:func:`choose_act_order`, three GPTQ runs instead of one). ``clip``: each group's
    scale is searched among clipped ones (:data:`~shrink.quant.algorithms.group_rounding.CLIP_RATIOS` of its
    largest weight) for the smallest rounding error weighted by each input's mean square on the calibration
    windows; it pays on rotated weights (:func:`shrink.llm.rotate.rotate_llama`), whose groups have no outlier
    to keep. ``sequential``: the input statistics GPTQ and ``clip`` read are measured block by block (a decoder
    layer, :func:`shrink.llm.blocks.decoder_blocks`), each on the model whose earlier blocks are already
    quantized, as GPTQ's reference code does for LLMs: each block's codes then make up for the error of the blocks
    before it. Each block runs alone on its recorded inputs (:class:`shrink.llm.blocks.BlockInputs`), so this
    costs about one more block forward per window and block."""
    _check_settings(bits, lm_head_bits, method, calibration is not None, clip, sequential, asymmetric)
    gptq = method.endswith("gptq")
    if act_order == "auto":
        calibration = list(calibration or [])
        act_order = choose_act_order(
            model, bits, group_size, method, calibration, include_lm_head, lm_head_bits, clip, sequential, asymmetric
        )[0]
    out = copy.deepcopy(model).eval()
    layers = _linears(out, include_lm_head)
    width = _widths(layers, bits, lm_head_bits, group_size)
    windows = [{"input_ids": ids.reshape(1, -1), "use_cache": False} for ids in calibration or []]
    factors = _awq_factors(out, layers, windows, width, group_size, asymmetric) if method.startswith("awq") else {}
    blocks = decoder_blocks(out, layers, windows) if sequential else [list(layers)]
    inputs = BlockInputs(out, blocks, windows) if sequential else None
    for block in blocks:
        members = {n: layers[n] for n in block}
        scaled = {n: 1.0 / factors[n] for n in block if n in factors}  # the layers' inputs as the kernels see them
        hessians = _hessians(out, windows, block, members, scaled, inputs) if gptq or clip else {}
        for name, layer in members.items():
            hessian, factor = hessians.get(name), factors.get(name)
            grid = _Grid(width[name], group_size, act_order, clip, asymmetric and width[name] == 4)
            _set(out, name, _quantized(layer, hessian, factor, method, grid))
        if inputs:
            inputs.advance(block)
    config = getattr(out, "config", None)
    if config is not None:
        config.tie_word_embeddings = False  # lm_head is its own packed copy now
    return out


def _hessians(
    model: nn.Module,
    windows: list,
    group: list[str],
    layers: dict[str, nn.Linear],
    scales: dict[str, torch.Tensor],
    inputs: BlockInputs | None,
) -> dict[str, torch.Tensor]:
    """``E[x x^T]`` of one group's layers: block by block (``inputs``), or on the whole model in one pass."""
    if inputs is not None:
        return inputs.hessians(group, layers, scales)
    return input_hessians(model, layers, windows, input_scales=scales)


@dataclass(frozen=True)
class _Grid:
    """How one layer is rounded: its width, group, and GPTQ / clipping / zero-point options."""

    bits: int
    group_size: int
    act_order: bool
    clip: bool
    asymmetric: bool


def _quantized(
    layer: nn.Linear, hessian: torch.Tensor | None, factor: torch.Tensor | None, method: Method, grid: _Grid
) -> nn.Module:
    """``layer`` as a packed int8 / int4 weight-only layer: codes from GPTQ or round to nearest under ``hessian``
    (its input's ``E[x x^T]``: GPTQ's, and ``clip``'s energies), after AWQ's input scales ``factor``."""
    w = layer.weight.detach().float()
    if factor is not None:
        w = w * factor
    b, group = grid.bits, w.shape[1] if grid.bits == 8 else grid.group_size
    if method.endswith("gptq"):
        assert hessian is not None
        codes, scales, zeros = gptq_group_codes(
            w, hessian, b, group, scale_dtype=ACT_DTYPE, act_order=grid.act_order, clip=grid.clip,
            asymmetric=grid.asymmetric,
        )  # fmt: skip
    else:
        energy = torch.diag(hessian) if grid.clip and hessian is not None else None
        codes, scales, zeros = rtn_codes(w, b, group, ACT_DTYPE, energy, grid.asymmetric)
    if b == 8:
        new: Int8WeightLinear | Int4WeightLinear = Int8WeightLinear(codes, scales, layer.bias)
    else:
        new = Int4WeightLinear(codes, scales, group, layer.bias, zeros)
    if factor is not None:
        new.scale_input(1.0 / factor)
    return new


def held_out_choice(
    build: Callable[[Any, list[torch.Tensor]], nn.Module], settings: Sequence[Any], calibration: Sequence[torch.Tensor]
) -> tuple[Any, dict[Any, float]]:
    """The setting whose model does best on calibration windows it was not fitted on: ``build(setting, fit)``
    quantizes with one of ``settings`` on every other window of ``calibration`` (the first, the third, ...) and its
    perplexity is measured on the rest, so both parts sample the whole calibration text (the data a method is
    scored on never chooses its settings). Returns the setting with the lowest held-out perplexity (an earlier one
    on a tie: list the default first) and every setting's figure."""
    windows = [w.reshape(1, -1) for w in calibration]
    if len(windows) < 2:
        raise ConfigError(
            f"held_out_choice: needs at least 2 calibration windows (one to fit, one to judge), got {len(windows)}"
        )
    if not settings:
        raise ConfigError("held_out_choice: no setting to choose from")
    fit, held = windows[0::2], windows[1::2]
    tokens = [w.numel() - 1 for w in held]  # the mean NLL over all held-out tokens, windows of any length
    held_ppl: dict[Any, float] = {}
    for setting in settings:
        q = build(setting, fit)
        nll = sum(math.log(perplexity(q, w)) * n for w, n in zip(held, tokens, strict=True))
        held_ppl[setting] = math.exp(nll / sum(tokens))
        del q  # released before the next setting is built
    best = min(settings, key=lambda s: held_ppl[s])  # min keeps the first of equals
    return best, held_ppl


def choose_act_order(
    model: nn.Module,
    bits: Literal[4, 8],
    group_size: int,
    method: Method,
    calibration: list[torch.Tensor],
    include_lm_head: bool = True,
    lm_head_bits: Literal[4, 8] | None = None,
    clip: bool = False,
    sequential: bool = False,
    asymmetric: bool = False,
) -> tuple[bool, dict[bool, float]]:
    """Whether GPTQ's ``act_order`` helps this model, decided on the calibration windows alone
    (:func:`held_out_choice`: both ways fitted on every other window, judged by perplexity on the rest). Returns the
    choice (on only when strictly lower) and the held-out perplexity of each setting ``{False: ..., True: ...}``.
    ``clip``, ``sequential`` and ``asymmetric`` as for :func:`quantize_weight_only`, both ways."""
    if not method.endswith("gptq"):
        raise ConfigError(f"choose_act_order: act_order is a GPTQ setting; method {method!r} has no GPTQ step")

    def build(on: bool, fit: list[torch.Tensor]) -> nn.Module:
        return quantize_weight_only(
            model, bits, group_size, method, fit, include_lm_head, lm_head_bits, on, clip, sequential, asymmetric
        )

    return held_out_choice(build, (False, True), calibration)
