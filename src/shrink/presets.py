"""Named presets: the stage lists that won their benchmark, shipped with the package.

A preset is an ordered list of configs, one per algorithm, that the benchmarks measure under the same name
(``docs/benchmarks.md`` shows each one's fidelity, size and speed next to the float baselines and the peers). Use it
in Python (``shrink.quantize(model, shrink.presets.get("encoder-int8"), calibration=...)``), in a recipe (a stage
``{preset: encoder-int8}`` expands into its stages), or list them with ``shrink presets``.

Selectors name layer types, and leave out layers by the names transformers gives them (``pooler``, ``lm_head``),
so a preset applies to any model of its family, not only the one it was measured on.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import yaml

from shrink.config import Config
from shrink.errors import ConfigError
from shrink.quant import AWQ, GPTQ, Int8Dynamic, SignRound, SmoothQuant, WeightOnly
from shrink.select import Selector

__all__ = ["Preset", "PRESETS", "get", "describe"]

#: an encoder's Linears, without the pooler (not part of a sentence embedding)
ENCODER_LINEARS = Selector(types=("Linear",), ignore=(r"re:.*pooler.*",))
#: an encoder's embedding tables
ENCODER_TABLES = Selector(types=("Embedding",))
#: a decoder's Linears, without the output projection (its vocabulary-wide output is the most sensitive layer)
DECODER_LINEARS = Selector(types=("Linear",), ignore=("lm_head",))


@dataclass(frozen=True)
class Preset:
    """A named stage list: what it is for, the verb that runs it, and the benchmark section that measures it."""

    name: str
    summary: str
    verb: str
    benchmark: str
    build: Callable[[], list[Config]]

    def stages(self) -> list[Config]:
        """A fresh list of the preset's configs, in the order they apply."""
        return self.build()


def _encoder_int8() -> list[Config]:
    return [
        SmoothQuant(alpha="auto", per_token=True, selector=ENCODER_LINEARS),
        GPTQ(selector=ENCODER_LINEARS),
        Int8Dynamic(granularity="token", selector=ENCODER_LINEARS),
        WeightOnly(bits=8, group_size=32, selector=ENCODER_TABLES),
    ]


def _encoder_int4() -> list[Config]:
    # asymmetric groups: chosen on MiniLM's calibration split (2026-12-06, the sentences the stages read): mean
    # cosine of the embeddings to fp32 0.9966 against 0.9955 on symmetric groups (round to nearest: 0.9596 / 0.9537)
    # Tried and not taken (2026-12-07 evening; probes calibrated on corpus sentences 0-63 plus the extra sentences and
    # scored on corpus sentences 64-127, which nothing read): end-to-end QAT after AWQ + SignRound (0.9902 before it;
    # straight-through codes on this grid, fp32 MiniLM's token states and embeddings as targets, 2,624 unscored
    # sentences, Adam, batch 16): lr 3e-4 for 400 steps 0.9912, for 1,500 steps 0.9879 (its training loss still
    # falling: the 2,624 sentences are memorised too), lr 1e-3 for 1,000 steps diverged (0.881).
    # Block-diagonal Hadamard rotations of every Linear's input (128 wide, the group size; a run-time cost on every
    # layer), round to nearest, scored on those 64 and 192 unread docstring sentences: 0.9611 against 0.9575.
    grid = {"bits": 4, "group_size": 128, "asymmetric": True}
    return [
        AWQ(**grid, selector=ENCODER_LINEARS),  # type: ignore[arg-type]
        SignRound(**grid, selector=ENCODER_LINEARS),  # type: ignore[arg-type]
        WeightOnly(**grid, selector=ENCODER_LINEARS),  # type: ignore[arg-type]
    ]


def _decoder_w8a8() -> list[Config]:
    return [
        SmoothQuant(alpha="auto", per_token=True, selector=DECODER_LINEARS),
        GPTQ(selector=DECODER_LINEARS),
        Int8Dynamic(granularity="token", selector=DECODER_LINEARS),
    ]


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "encoder-int8",
            "int8 transformer encoder (BERT family): SmoothQuant searched per input, GPTQ int8 weights, per-token "
            "int8 activations at run time, int8 embedding tables (one scale per 32 columns)",
            "quantize",
            "Quantization: all-MiniLM-L6-v2",
            _encoder_int8,
        ),
        Preset(
            "encoder-int4",
            "int4 weight-only transformer encoder: AWQ input scaling and SignRound codes (rounding learned block by "
            "block) on asymmetric groups of 128 inputs (a zero point each), packed two per byte (ONNX Runtime "
            "MatMulNBits on export)",
            "quantize",
            "int4 weights: all-MiniLM-L6-v2",
            _encoder_int4,
        ),
        Preset(
            "decoder-w8a8",
            "W8A8 decoder LLM (Llama family): SmoothQuant searched per input, GPTQ int8 weights, per-token int8 "
            "activations; lm_head stays float",
            "quantize",
            "A real LLM: SmolLM2-135M",
            _decoder_w8a8,
        ),
    )
}


def get(name: str) -> list[Config]:
    """The stage list of preset ``name`` (a fresh list); an unknown name is an error listing the known ones."""
    preset = PRESETS.get(name) if isinstance(name, str) else None
    if preset is None:
        close = difflib.get_close_matches(str(name), list(PRESETS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown preset {name!r} ({hint}known: {', '.join(PRESETS)})")
    return preset.stages()


def describe(name: str | None = None) -> str:
    """Text for ``shrink presets``: every preset with its summary, or one preset's stages as a recipe lists them."""
    if name is None:
        width = max(len(n) for n in PRESETS)
        return "\n".join(f"{n:<{width}}  {p.summary}" for n, p in PRESETS.items())
    stages = get(name)
    preset = PRESETS[name]
    lines = [f"{name}: {preset.summary}", f"verb: shrink.{preset.verb}; measured in: {preset.benchmark}", "stages:"]
    lines += ["  - " + yaml.safe_dump(cfg.to_dict(), default_flow_style=True, sort_keys=False, width=10**6).strip()
              for cfg in stages]  # fmt: skip
    return "\n".join(lines)
