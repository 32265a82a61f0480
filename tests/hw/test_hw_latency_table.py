"""The measured CPU lookup table: entries are measured once, cached on disk, and reused by a new table."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import shrink.hw as hw
from shrink.hw.measured import execution_kind
from shrink.hw.profile import MeasuredSpec

pytestmark = pytest.mark.usefixtures("one_thread")


def test_table_measures_once_and_caches_on_disk(tmp_path):
    spec = MeasuredSpec(threads=1, reps=5)
    model = nn.Sequential(nn.Linear(32, 16)).eval()
    layer = hw.trace_layers(model, torch.randn(1, 32))[0]
    path = tmp_path / "table.json"
    table = hw.LatencyTable(spec, path)
    fp32 = table.latency_ms(layer, hw.LayerChoice())
    int8 = table.latency_ms(layer, hw.LayerChoice(bits=4))
    eager = table.latency_ms(layer, hw.LayerChoice(), runtime="torch")
    assert table.measured_now == 3
    assert min(fp32, int8, eager) > 0
    assert table.latency_ms(layer, hw.LayerChoice(bits=8)) == int8  # 4 and 8 bits run the same int8 kernel
    assert table.measured_now == 3
    on_disk = json.loads(path.read_text())["entries"]
    assert len(on_disk) == 3
    again = hw.LatencyTable(spec, path)
    assert again.latency_ms(layer, hw.LayerChoice()) == fp32
    assert again.measured_now == 0


def test_execution_kinds():
    spec = MeasuredSpec()
    assert execution_kind(hw.LayerChoice(bits=2), spec) == "int8"
    assert execution_kind(hw.LayerChoice(bits=16), spec) == "fp32"
    assert execution_kind(hw.LayerChoice(bits=8), MeasuredSpec(runtime="torch")) == "fp32"


def test_estimate_on_measured_profile_uses_the_table(tmp_path, monkeypatch):
    monkeypatch.setenv("SHRINK_CACHE", str(tmp_path))
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    profile = hw.load_profile("cpu").model_copy(update={"measured": MeasuredSpec(threads=1, reps=3)})
    e = hw.estimate(model, profile, torch.randn(1, 16), {"0": hw.LayerChoice(bits=8)})
    assert e.energy_j is None
    assert [c.executed_as for c in e.layers] == ["int8 (onnxruntime)", "fp32 (onnxruntime)"]
    assert e.latency_s == pytest.approx(sum(c.latency_s for c in e.layers))
    assert list(tmp_path.glob("hw/latency-*.json"))
