"""End-to-end calibration of the measured CPU profile: boundary accounting along the chain of layers, the fitted
model's arithmetic, a fit on a small model, and the latency plan that keeps an end-to-end budget."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shrink
from shrink.errors import ConfigError
from shrink.hw import LatencyTable, LayerChoice, trace_layers
from shrink.hw.calibrate import Calibration, boundary_kelems, calibrate, policy_features
from shrink.hw.profile import MeasuredSpec
from shrink.search.allocate import Option
from shrink.search.latency_plan import plan_latency

pytestmark = pytest.mark.usefixtures("one_thread")


def _chain() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8)).eval()


def _profile():
    return shrink.hw.load_profile("cpu").model_copy(update={"measured": MeasuredSpec(threads=1, reps=6)})


def test_boundaries_are_charged_only_where_int8_meets_fp32():
    specs = trace_layers(_chain(), torch.randn(10, 16))  # elems in/out: 160/320, 320/640, 640/80
    assert boundary_kelems(specs, ["fp32", "fp32", "fp32"]) == 0.0
    assert boundary_kelems(specs, ["int8", "int8", "int8"]) == pytest.approx((160 + 80) / 1e3)  # model in and out
    assert boundary_kelems(specs, ["fp32", "int8", "fp32"]) == pytest.approx((320 + 640) / 1e3)
    assert boundary_kelems(specs, ["int8", "fp32", "int8"]) == pytest.approx((160 + 320 + 640 + 80) / 1e3)


def test_calibration_arithmetic():
    cal = Calibration(offset_ms=0.5, per_kelem_ms=0.01, rms_ms=0.0, n=4)
    spec = trace_layers(_chain(), torch.randn(10, 16))[1]  # 320 in, 640 out
    assert cal.option_ms(spec, "fp32", 2.0) == 2.0 and cal.option_ms(spec, "int8", 1.5) == 1.5
    assert cal.predict_ms((3.0, 0.24)) == pytest.approx(0.5 + 3.0 + 0.01 * 0.24)  # layers 3 ms, 240 boundary elems


def test_calibrate_fits_non_negative_coefficients(tmp_path):
    model, x = _chain(), torch.randn(32, 16)
    profile = _profile()
    table = LatencyTable(profile.measured, path=tmp_path / "t.json")
    cal = calibrate(model, x, [torch.randn(32, 16)], profile, table, rounds=1)
    assert cal.n == 2 * 3 + 2
    assert cal.offset_ms >= 0 and cal.per_kelem_ms >= 0 and cal.rms_ms >= 0
    fp32 = cal.predict_ms(policy_features(trace_layers(model, x), {}, profile, table))
    assert fp32 >= cal.offset_ms and fp32 > 0


def test_latency_plan_keeps_an_end_to_end_budget(tmp_path):
    model, x = _chain(), torch.randn(32, 16)
    profile = _profile()
    table = LatencyTable(profile.measured, path=tmp_path / "t.json")
    specs = trace_layers(model, x)
    options = {
        s.name: [
            Option(LayerChoice(bits=b), loss, {"latency": table.latency_ms(s, LayerChoice(bits=b)) / 1e3})
            for b, loss in ((8, 1.0), (32, 0.0))
        ]
        for s in specs
    }
    calib = [torch.randn(32, 16)]
    plan = plan_latency(model, options, specs, 1.0, profile, table, x, calib, verify=1)  # 1 s: everything fits
    assert all(c.bits == 32 for c in plan.allocation.policy.values())  # least loss within budget
    assert plan.checks and plan.checks[-1][1] <= 1.0
    assert plan.allocation.totals["latency"] <= 1.0
    with pytest.raises(ConfigError, match="budget"):
        plan_latency(model, options, specs, 1e-9, profile, table, x, calib, verify=0)
