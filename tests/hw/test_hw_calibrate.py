"""End-to-end calibration of the measured CPU profile: boundary accounting along the chain of layers, the fitted
model's arithmetic, a fit on a small model, and the latency plan that keeps an end-to-end budget."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shrink
from shrink.autosearch.allocate import Option
from shrink.autosearch.latency_plan import plan_latency
from shrink.errors import ConfigError, ModelError
from shrink.hw import LatencyTable, LayerChoice, trace_layers
from shrink.hw.calibrate import (
    Calibration,
    PolicyFeatures,
    boundary_kelems,
    calibrate,
    calibration_policies,
    policy_features,
)
from shrink.hw.profile import MeasuredSpec

pytestmark = pytest.mark.usefixtures("one_thread")


def _chain() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8)).eval()


def _profile():
    return shrink.hw.load_profile("cpu").model_copy(update={"measured": MeasuredSpec(threads=1, reps=6)})


def test_boundaries_are_charged_only_where_int8_meets_fp32():
    specs = trace_layers(_chain(), torch.randn(10, 16))  # elems in/out: 160/320, 320/640, 640/80
    assert boundary_kelems(specs, ["fp32", "fp32", "fp32"]) == (0.0,) * 6
    assert boundary_kelems(specs, ["int8", "int8", "int8"]) == pytest.approx((0.16, 0, 0, 0, 0, 0.08))  # model in/out
    assert boundary_kelems(specs, ["fp32", "int8", "fp32"]) == pytest.approx((0, 0, 0.32, 0.64, 0, 0))
    assert boundary_kelems(specs, ["int8", "fp32", "int8"]) == pytest.approx((0.16, 0.32, 0, 0, 0.64, 0.08))


def test_calibration_arithmetic():
    cal = Calibration(
        offset_ms=0.5, boundary_ms=(("a", 0.01, 0.0), ("b", 0.0, 0.02)), chain_credit_ms=0.05, rms_ms=0.0, n=8
    )
    spec = trace_layers(_chain(), torch.randn(10, 16))[1]  # 320 in, 640 out
    assert cal.option_ms(spec, "fp32", 2.0) == 2.0 and cal.option_ms(spec, "int8", 1.5) == 1.5
    # layers 3 ms; 240 elements at a's input, 100 at b's output, 1000 passed from int8 to int8
    features = PolicyFeatures(3.0, (0.24, 0.5, 0.7, 0.1), 1.0)
    assert cal.predict_ms(features) == pytest.approx(0.5 + 3.0 + 0.01 * 0.24 + 0.02 * 0.1 - 0.05)
    with pytest.raises(ValueError, match="2 layers"):
        cal.predict_ms(PolicyFeatures(3.0, (0.0,) * 6, 0.0))
    assert "a in 0.01" in cal.describe() and "b out 0.02" in cal.describe() and "a out" not in cal.describe()
    # a fixed credit per int8 -> int8 hand-over, on top of the one per element
    linked = Calibration(0.5, cal.boundary_ms, 0.05, 0.0, 8, link_credit_ms=0.1)
    assert linked.predict_ms(features._replace(int8_links=2)) == pytest.approx(cal.predict_ms(features) - 0.2)
    assert "0.1 ms per hand-over" in linked.describe()
    # a layer runs faster inside a model than alone: the table times are scaled, in predictions and allocator shares
    halved = Calibration(0.5, cal.boundary_ms, 0.05, 0.0, 8, table_scale=0.5)
    assert halved.predict_ms(features) == pytest.approx(0.5 + 1.5 + 0.01 * 0.24 + 0.02 * 0.1 - 0.05)
    assert halved.option_ms(spec, "fp32", 2.0) == 1.0 and "table times x 0.5" in halved.describe()


def test_calibration_policies_isolate_every_boundary():
    names = ["a", "b", "c"]
    policies = calibration_policies(names)
    assert len(policies) == 4 * len(names)
    specs = trace_layers(_chain(), torch.randn(10, 16))
    seen = [[k > 0 for k in boundary_kelems(specs, ["int8" if n in p else "fp32" for n in names])] for p in policies]
    # every boundary appears in some policy, so the fit can price each one
    assert all(any(row[j] for row in seen) for j in range(2 * len(names)))


def test_calibrate_fits_the_table_scale_and_non_negative_boundary_costs(tmp_path):
    model, x = _chain(), torch.randn(32, 16)
    profile = _profile()
    table = LatencyTable(profile.measured, path=tmp_path / "t.json")
    cal = calibrate(model, x, [torch.randn(32, 16)], profile, table, rounds=1)
    assert cal.n == 4 * 3 and len(cal.boundary_ms) == 3
    assert cal.rms_ms >= 0 and cal.chain_credit_ms >= 0 and cal.table_scale > 0  # the offset may be negative
    assert all(c >= 0 for _, i, o in cal.boundary_ms for c in (i, o))
    links = policy_features(trace_layers(model, x), {n: LayerChoice(bits=8) for n in ("0", "2", "4")}, profile, table)
    assert links.int8_link_kelems == pytest.approx((32 * 32 + 32 * 64) / 1e3)  # 0 -> 2 and 2 -> 4
    assert links.int8_links == 2 and cal.link_credit_ms == 0.0  # one width: no credit per hand-over
    fp32 = cal.predict_ms(policy_features(trace_layers(model, x), {}, profile, table))
    # the scale makes the all-fp32 table sum the all-fp32 time measured (no boundary in that model)
    assert fp32 == pytest.approx(cal.fp32_ms + cal.offset_ms) and fp32 > 0


def test_calibrate_times_thinner_copies_with_the_same_layers(tmp_path):
    model, x = _chain(), torch.randn(32, 16)
    thin = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8)).eval()
    profile = _profile()
    table = LatencyTable(profile.measured, path=tmp_path / "t.json")
    cal = calibrate(model, x, [torch.randn(32, 16)], profile, table, rounds=1, thinner=[thin])
    assert cal.n == 2 * 4 * 3
    fp32 = cal.predict_ms(policy_features(trace_layers(model, x), {}, profile, table))
    assert fp32 == pytest.approx(cal.fp32_ms + cal.offset_ms)  # the scale still comes from the model itself
    other = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8)).eval()
    with pytest.raises(ModelError, match=r"thinner\[0\] has 2 layers, the model 3"):
        calibrate(model, x, [torch.randn(32, 16)], profile, table, rounds=1, thinner=[other])
    wider = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 128), nn.ReLU(), nn.Linear(128, 8)).eval()
    with pytest.raises(ModelError, match=r"thinner\[0\]: layer '2' is wider than in the model"):
        calibrate(model, x, [torch.randn(32, 16)], profile, table, rounds=1, thinner=[wider])


def _synthetic_timings(monkeypatch, truth: Calibration, profile, table) -> None:
    """Stand-ins for ONNX Runtime: each timed (model, policy) takes exactly what ``truth`` predicts for it."""
    import shrink.hw.calibrate as calibration

    def sessions(timed, *args, **kwargs):
        return timed

    def times(timed, x, **kwargs):
        return [truth.predict_ms(policy_features(trace_layers(m, x), p, profile, table)) for m, p in timed]

    monkeypatch.setattr(calibration, "int8_sessions", sessions)
    monkeypatch.setattr(calibration, "interleaved_latency_ms", times)


def test_calibrate_recovers_both_credits_from_two_widths_and_fits_no_link_credit_on_one(tmp_path, monkeypatch):
    model, x = _chain(), torch.randn(32, 16)
    thin = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8)).eval()
    profile = _profile()
    table = LatencyTable(profile.measured, path=tmp_path / "t.json")
    boundaries = (("0", 0.02, 0.01), ("2", 0.03, 0.0), ("4", 0.0, 0.04))
    truth = Calibration(0.0, boundaries, 0.004, 0.0, 0, link_credit_ms=0.02)
    _synthetic_timings(monkeypatch, truth, profile, table)
    cal = calibrate(model, x, [torch.randn(32, 16)], profile, table, thinner=[thin])
    assert cal.table_scale == pytest.approx(1.0) and cal.offset_ms == pytest.approx(0.0, abs=1e-6)
    assert cal.chain_credit_ms == pytest.approx(0.004, abs=1e-6) and cal.link_credit_ms == pytest.approx(0.02)
    assert cal.rms_ms == pytest.approx(0.0, abs=1e-6)
    assert [c for b in cal.boundary_ms for c in b[1:]] == pytest.approx([c for b in boundaries for c in b[1:]])
    # one width: the credit per hand-over is left out of the fit, whatever the timings
    assert calibrate(model, x, [torch.randn(32, 16)], profile, table).link_credit_ms == 0.0


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
    roomy = plan_latency(model, options, specs, 1.0, profile, table, x, calib, verify=1, headroom=0.5)
    assert roomy.checks[-1][1] <= 0.5 and roomy.allocation.totals["latency"] <= 0.5  # kept within budget x 0.5
    with pytest.raises(ConfigError, match="budget"):
        plan_latency(model, options, specs, 1e-9, profile, table, x, calib, verify=0)
