"""The int8 cost section finds the int8 Linear that runs each of MiniLM's first-layer Linears, refuses others, and
bounds the Linears by their GEMMs alone in its ceiling table."""

import pytest
import torch
from benchmarks.int8_costs import FIRST_LAYER, _int8_linear
from torch import nn


def _nest(leaf: nn.Module) -> nn.Module:
    """A module tree with ``leaf`` at ``FIRST_LAYER + '.attention.output.dense'``."""
    root = nn.Module()
    node = root
    for part in f"{FIRST_LAYER}.attention.output".split("."):
        child = nn.Module()
        node.add_module(part, child)
        node = child
    node.add_module("dense", leaf)
    return root


def test_a_float_linear_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match=r"attention\.output\.dense runs as Linear, not an int8 Linear"):
        _int8_linear(_nest(nn.Linear(4, 4)), ("attention.output.dense",))


def test_the_int8_linear_is_found_directly_or_through_its_merged_group() -> None:
    from shrink.quant.layers.modules import QuantLinear
    from shrink.quant.runtimes.torch_token import (
        SharedInputGEMM,
        SharedInputMember,
        TokenInt8Linear,
        onednn_int8_available,
    )

    if not onednn_int8_available():
        pytest.skip("no oneDNN int8 linear in this PyTorch build")
    layers = [QuantLinear(8, 4, True, 8, "dynamic_token") for _ in range(2)]
    for layer in layers:
        layer.weight_int.copy_(torch.randint(-127, 128, (4, 8)).float())
    single = TokenInt8Linear(layers[0])
    assert _int8_linear(_nest(single), ("attention.output.dense",)) is single
    shared = SharedInputGEMM(layers)
    found = _int8_linear(_nest(SharedInputMember(shared, 0, False)), ("attention.output.dense",))
    assert found is shared.fused and found.out_features == 8


def test_the_ceiling_table_bounds_the_linears_by_their_gemms_alone() -> None:
    from benchmarks.int8_costs import ceiling_table

    table = ceiling_table({1: (0.10, 0.08, 0.05), 32: (1.0, 1.25, 0.8)}, True, {32: 2.5, 1: 2.0})
    by_batch = {row[0]: row for row in table.rows}
    assert by_batch["1"][1:] == ["100", "80", "50", "1.25x", "2.00x", "2.0x"]
    assert by_batch["32"][4:] == ["0.80x", "1.25x", "2.5x"]
    assert "A whole-model target above that ratio against a bf16 baseline" in table.note
    fp32 = ceiling_table({8: (1.0, 0.5, 0.0)}, False, {})
    assert fp32.columns[1] == "fp32 Linears" and fp32.rows[0][4:] == ["2.00x", "-", "-"]
    assert "bf16 baseline" not in fp32.note
