"""Hardware profiles, the roofline cost model, estimate() totals and rank correlation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shrink.hw as hw
from shrink.errors import ConfigError
from shrink.hw.layers import input_widths, scaled


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 10),
    ).eval()


X = torch.randn(1, 3, 8, 8)


def test_bundled_profiles_load_and_unknown_names_fail(tmp_path):
    assert {"cpu", "phone_npu", "edge_tpu"} <= set(hw.bundled_profiles())
    assert hw.load_profile("phone_npu").accelerator.sram_bytes == 8 * 2**20
    assert hw.load_profile("cpu").measured.threads == 2
    with pytest.raises(ConfigError, match="unknown hardware profile"):
        hw.load_profile("tpu_v9")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nkind: accelerator\naccelerator: {macs_per_s: {int3: 1}, sram_bytes: 1, "
        "dram_bytes_per_s: 1, energy: {mac_pj: {}, sram_byte_pj: 1, dram_byte_pj: 1}}\n"
    )
    with pytest.raises(ConfigError, match="int3"):
        hw.load_profile(bad)


def test_trace_layers_shapes_and_macs():
    specs = hw.trace_layers(_net(), X)
    assert [s.name for s in specs] == ["0", "2", "5"]
    assert specs[0].macs == 16 * 8 * 8 * 3 * 9
    assert specs[2].macs == 32 * 8 * 8 * 10
    assert specs[1].weight_count == 32 * 16 * 9


@pytest.mark.parametrize("profile", ["phone_npu", "edge_tpu"])
def test_roofline_monotonic_in_bits(profile):
    model = _net()
    names = [s.name for s in hw.trace_layers(model, X)]
    prev = None
    for bits in (32, 16, 8, 4, 2):
        e = hw.estimate(model, profile, X, {n: hw.LayerChoice(bits=bits) for n in names})
        assert e.weight_bytes == pytest.approx(sum(s.weight_count for s in hw.trace_layers(model, X)) * bits / 8)
        if prev is not None:
            assert e.latency_s <= prev.latency_s + 1e-15
            assert e.energy_j <= prev.energy_j + 1e-18
            assert e.bitops < prev.bitops
            assert e.weight_bytes < prev.weight_bytes
        prev = e
    # totals are sums of the per-layer figures
    assert prev.latency_s == pytest.approx(sum(c.latency_s for c in prev.layers))
    assert prev.energy_j == pytest.approx(sum(c.energy_j for c in prev.layers))


def test_roofline_counts_bytes_moved_when_weights_do_not_fit():
    # a layer far larger than the edge TPU's SRAM is bound by streaming its weights, not by MACs
    model = nn.Sequential(nn.Linear(4096, 4096)).eval()
    x = torch.randn(1, 4096)
    small = hw.estimate(model, "edge_tpu", x, {"0": hw.LayerChoice(bits=8)})
    assert small.layers[0].bound == "memory"  # 16 MB of int8 weights > 6 MB weight cache
    assert small.layers[0].dram_bytes == pytest.approx(4096 * 4096)
    assert small.layers[0].latency_s == pytest.approx(4096 * 4096 / 5e8 + 5e-6)


def test_width_scales_layers_and_their_consumers():
    model = _net()
    specs = hw.trace_layers(model, X)
    widths = input_widths(specs, {"0": 0.5, "2": 0.25})
    assert widths == {"0": 1.0, "2": 0.5, "5": 0.25}
    half = scaled(specs[1], 0.5, 0.25)
    assert half.macs == specs[1].macs // 8
    full = hw.estimate(model, "phone_npu", X)
    thin = hw.estimate(model, "phone_npu", X, {"0": hw.LayerChoice(width=0.5), "2": hw.LayerChoice(width=0.25)})
    assert thin.macs < full.macs / 4


def test_estimate_rejects_unknown_layers():
    with pytest.raises(ConfigError, match="nope"):
        hw.estimate(_net(), "phone_npu", X, {"nope": hw.LayerChoice(bits=8)})


def test_rank_correlation():
    assert hw.rank_correlation([1, 2, 3, 4], [10, 20, 30, 45]).spearman == pytest.approx(1.0)
    assert hw.rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]).spearman == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        hw.rank_correlation([1, 2], [1, 2])
