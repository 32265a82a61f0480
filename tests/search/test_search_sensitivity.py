"""Hutchinson traces, per-layer sensitivities, policy application and the mixed_precision stage."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shrink
from shrink.api import Context, apply
from shrink.autosearch.apply import apply_policy, calibrate_inputs
from shrink.autosearch.mixed_precision import MixedPrecision
from shrink.autosearch.sensitivity import hessian_traces, hutchinson_trace, measured_sensitivity
from shrink.errors import ConfigError
from shrink.hw.policy import LayerChoice
from shrink.stages import config_from_dict

pytestmark = pytest.mark.usefixtures("one_thread")


def test_hutchinson_matches_exact_trace_of_a_quadratic():
    torch.manual_seed(0)
    a = torch.randn(30, 30)
    h1 = a @ a.T / 30 + torch.eye(30)  # symmetric positive definite
    h2 = torch.diag(torch.linspace(0.5, 3.0, 12))
    x1 = torch.randn(30, requires_grad=True)
    x2 = torch.randn(12, requires_grad=True)

    def loss() -> torch.Tensor:
        return 0.5 * x1 @ h1 @ x1 + 0.5 * x2 @ h2 @ x2

    t1, t2 = hutchinson_trace(loss, [x1, x2], samples=400, seed=1)
    assert t1 == pytest.approx(float(torch.trace(h1)), rel=0.05)
    assert t2 == pytest.approx(float(torch.trace(h2)), rel=1e-6)  # diagonal: Rademacher is exact


def _task(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 12, generator=g)
    y = (x[:, :4].sum(1) > 0).long() + 2 * (x[:, 4:8].sum(1) > 0).long()
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    shrink.train.fit(
        model, [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)], epochs=15, lr=1e-2, progress=False
    )
    return model.eval(), [(x[i : i + 64], y[i : i + 64]) for i in range(0, 256, 64)]


def test_sensitivities_grow_as_bits_shrink():
    model, data = _task()
    names = ["0", "2", "4"]
    choices = [LayerChoice(bits=b) for b in (2, 4, 8)]
    sens = measured_sensitivity(model, names, choices, data)
    for n in names:
        assert sens[n][choices[0]] > sens[n][choices[1]] > sens[n][choices[2]] >= 0
    traces = hessian_traces(model, names, data, samples=8)
    assert all(t > 0 for t in traces.values())


def test_apply_policy_quantizes_and_prunes_only_named_layers():
    model, data = _task()
    qp = calibrate_inputs(model, ["2"], data)
    out = apply_policy(model, {"0": LayerChoice(bits=4), "2": LayerChoice(bits=8, sparsity=0.5)}, input_qparams=qp)
    w0 = out[0].weight
    assert max(len(torch.unique(row)) for row in w0) <= 16
    assert float((out[2].weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    assert torch.equal(out[4].weight, model[4].weight)
    assert torch.count_nonzero(model[2].weight) == model[2].weight.numel()  # the user's model is unchanged
    assert "simulated" in out.shrink_execution
    with pytest.raises(ConfigError, match="structured pruning"):
        apply_policy(model, {"0": LayerChoice(width=0.5)})


def test_mixed_precision_stage_respects_the_byte_budget():
    model, data = _task()
    cfg = config_from_dict({"type": "mixed_precision", "budget": "bytes", "budget_bits": 4, "solver": "dp"})
    ctx = Context(example_inputs=data[0][0][:1], calibration=data, progress=False)
    out = apply(model, cfg, ctx)
    bits = {n: c["bits"] for n, c in out.shrink_policy.items()}
    params = {"0": 12 * 32, "2": 32 * 32, "4": 32 * 4}
    assert sum(params[n] * b for n, b in bits.items()) <= sum(params.values()) * 4
    assert any("simulated" in n for n in ctx.notes)
    assert cfg.to_dict()["type"] == "mixed_precision"
    half = apply(model, MixedPrecision(budget="bytes", budget_fraction=0.25), ctx)
    assert sum(params[n] * c["bits"] for n, c in half.shrink_policy.items()) <= 0.25 * sum(params.values()) * 32
    with pytest.raises(ConfigError, match="exactly one"):
        MixedPrecision(budget_bits=4, budget_fraction=0.5)
    with pytest.raises(ConfigError, match="energy budget needs an accelerator"):
        apply(model, MixedPrecision(budget="energy", budget_fraction=0.5, profile="cpu"), ctx)
