"""Compression search in-process: candidates, measured vs predicted points, tolerance, Pareto front, files."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import shrink
from shrink.api import Context, apply
from shrink.autosearch.result import pareto_front
from shrink.autosearch.search import CompressionSearch, run_search
from shrink.errors import ConfigError
from shrink.stages import config_from_dict

pytestmark = pytest.mark.usefixtures("one_thread")


#: the settings the latency searches share: the measured CPU profile, int8 or fp32, priced at batch 8
_LATENCY = {"profile": "cpu", "objective": "latency", "bits": (8, 32), "backend": "local", "cost_batch": 8}


def _task():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 16, generator=g)
    y = (x[:, :4].sum(1) > 0).long() + 2 * (x[:, 4:8].sum(1) > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    train = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 384, 32)]
    shrink.train.fit(model, train, epochs=20, lr=1e-2, progress=False)
    return model.eval(), train, [(x[384:], y[384:])]


def test_search_returns_the_cheapest_measured_candidate_within_tolerance(tmp_path):
    model, train, val = _task()
    cfg = CompressionSearch(
        profile="phone_npu",
        objective="bytes",
        bits=(4, 8, 32),
        widths=(1.0, 0.5),
        candidates=5,
        backend="local",
        tolerance=2.0,
        finetune_epochs=1,
        refine=0,
    )
    ctx = Context(
        example_inputs=val[0][0][:1], train=train, calibration=train, val=val, progress=False, out_dir=tmp_path
    )
    result, chosen = run_search(model, cfg, ctx)
    costs = [p.predicted_cost for p in result.points]
    assert costs == sorted(costs) and costs[-1] <= result.baseline_cost
    assert result.best is not None
    best = result.point(result.best)
    assert result.baseline_metric - best.measured_metric <= 2.0
    cheaper = [p for p in result.points if p.predicted_cost < best.predicted_cost]
    assert all(p.measured and result.baseline_metric - p.measured_metric > 2.0 for p in cheaper)
    policies = [p.policy for p in result.points]  # the uniform points are candidates too
    assert {n: {"bits": 8, "sparsity": 0.0, "width": 1.0} for n in ("0", "2", "4")} in policies
    assert {n: {"bits": 32, "sparsity": 0.0, "width": 0.5} for n in ("0", "2")} in policies
    assert any(not p.measured for p in result.points) or len(result.points) <= 2
    out = apply(model, cfg, ctx)
    assert "shrink_policy" in vars(out)
    assert sum(p.numel() for p in out.parameters()) <= sum(p.numel() for p in model.parameters())
    saved = json.loads((tmp_path / "search.json").read_text())
    assert saved["best"] == result.best and {"measured"} <= set(saved["points"][0])
    assert (tmp_path / "search_pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_refinement_narrows_one_layer_at_a_time_and_keeps_the_cheapest_passing_point():
    model, train, val = _task()
    cfg = CompressionSearch(
        profile="phone_npu",
        objective="bytes",
        bits=(8, 32),
        widths=(1.0, 0.75, 0.5, 0.25),
        candidates=4,
        backend="local",
        tolerance=1.0,
        finetune_epochs=1,
        refine=6,
    )
    ctx = Context(example_inputs=val[0][0][:1], train=train, calibration=train, val=val, progress=False)
    result, _ = run_search(model, cfg, ctx)
    refined = [p for p in result.points if p.label.startswith("r")]
    assert refined and all(p.measured for p in refined) and len(refined) <= 6
    scanned = [p for p in result.points if p.label.startswith("c")]
    for p in refined:  # each neighbour differs from a measured point in exactly one layer, one width step narrower
        widths = {n: c["width"] for n, c in p.policy.items()}
        assert any(
            sum(widths.get(n, 1.0) != {m: c["width"] for m, c in q.policy.items()}.get(n, 1.0) for n in widths) == 1
            for q in scanned + refined
            if q.measured and q is not p
        )
    passing = [p for p in result.points if p.measured and result.baseline_metric - p.measured_metric <= 1.0]
    assert result.best == min(passing, key=lambda p: p.predicted_cost).label


def test_latency_search_times_the_candidates_within_tolerance_and_keeps_the_fastest(tmp_path, monkeypatch):
    monkeypatch.setenv("SHRINK_CACHE", str(tmp_path))  # a fresh latency table, measured here
    model, train, val = _task()
    cfg = CompressionSearch(**_LATENCY, widths=(1.0, 0.5), candidates=3, tolerance=1.0, finetune_epochs=1, refine=2)
    ctx = Context(example_inputs=val[0][0][:1], train=train, calibration=train, val=val, progress=False)
    result, _ = run_search(model, cfg, ctx)
    passing = [p for p in result.points if p.measured and result.baseline_metric - p.measured_metric <= 1.0]
    timed = [p for p in result.points if p.measured_cost is not None]
    assert passing and {p.label for p in timed} == {p.label for p in passing}
    assert all(p.measured_cost > 0 for p in timed)
    assert result.best == min(timed, key=lambda p: p.measured_cost).label
    assert all(p.measured_cost is None for p in result.points if not p.measured)
    off, _ = run_search(model, cfg.model_copy(update={"time_candidates": False}), ctx)
    assert all(p.measured_cost is None for p in off.points)


def test_budget_sweep_runs_from_the_cheapest_to_the_dearest_allocation_in_the_options_units():
    """The sweep once priced its top end from the uncalibrated profile where a layer had no fp32 option: with the
    options in other units (calibrated ones), the budgets could all fall to the cheapest allocation. Here there is
    no profile at all: both ends come from the options."""
    from shrink.autosearch.allocate import Option
    from shrink.autosearch.search import _candidates, _Space
    from shrink.hw import LayerChoice

    wide, narrow = LayerChoice(bits=8), LayerChoice(bits=8, width=0.5)
    options = {n: [Option(wide, 0.0, {"latency": 2.0}), Option(narrow, 1.0, {"latency": 1.0})] for n in "ab"}
    space = _Space([], [], {"a", "b"}, {n: [wide, narrow] for n in "ab"}, {}, options)
    config = CompressionSearch(objective="latency", bits=(8,), widths=(1.0, 0.5), uniform=False, candidates=5)

    def priced(policy):
        return sum(1.0 if c.width < 1.0 else 2.0 for c in policy.values())

    points = _candidates(space, priced, config)
    # budgets from 2 to 4 in geometric steps (2, 2.38, 2.83, 3.36, 4): both layers narrow, one of them, neither
    assert [p.predicted_cost for p in points] == [2.0, 3.0, 4.0]
    assert [p.label for p in points] == ["c0", "c1", "c2"]


def test_calibrated_latency_search_fits_on_a_copy_at_the_narrowest_width(tmp_path, monkeypatch):
    monkeypatch.setenv("SHRINK_CACHE", str(tmp_path))
    import shrink.autosearch.search as search

    seen: list[list[int]] = []
    fit = search.calibrate

    def spy(model, *args, thinner=(), **kwargs):
        seen.extend([m[0].out_features, m[2].out_features, m[4].out_features] for m in thinner)
        return fit(model, *args, thinner=thinner, **kwargs)

    monkeypatch.setattr(search, "calibrate", spy)
    model, train, val = _task()
    cfg = CompressionSearch(
        **_LATENCY,
        latency_model="calibrated",
        widths=(1.0, 0.75, 0.5),
        candidates=2,
        tolerance=5.0,
        finetune_epochs=0,
        refine=0,
        time_candidates=False,
    )
    ctx = Context(example_inputs=val[0][0][:1], train=train, calibration=train, val=val, progress=False)
    result, _ = run_search(model, cfg, ctx)
    assert seen == [[32, 32, 4]]  # the hidden layers at half width, the output layer whole
    assert model[0].out_features == 64 and result.points  # the user's model keeps its channels


def test_the_calibration_copy_narrows_only_the_layers_the_search_may_prune():
    from shrink.autosearch.search import _narrowest, _Space

    model, _, val = _task()
    config = CompressionSearch(**_LATENCY, latency_model="calibrated", widths=(1.0, 0.5))
    ctx = Context(example_inputs=val[0][0][:1], progress=False)
    selected = _Space([], [], {"0", "2"}, {"0": []}, {}, {})  # both hidden layers prunable, only "0" selected
    (copy,) = _narrowest(model, selected, config, ctx)
    assert [copy[0].out_features, copy[2].out_features] == [32, 64]
    assert _narrowest(model, _Space([], [], {"0", "2"}, {"4": []}, {}, {}), config, ctx) == []


def test_pareto_front():
    pts = [(1.0, 90.0), (2.0, 95.0), (2.5, 94.0), (3.0, 95.0), (0.5, 80.0)]
    assert pareto_front(pts) == [0, 1, 4]


def test_search_config_validation():
    assert config_from_dict({"type": "search", "tolerance": 0.5}).tolerance == 0.5
    with pytest.raises(ConfigError, match="bits"):
        CompressionSearch(bits=(3,))
    with pytest.raises(ConfigError, match="backend"):
        CompressionSearch(backend="slurm")
