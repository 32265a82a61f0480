"""The exact allocators (MILP and DP) against brute force, budgets, infeasibility, and the dual problem."""

from __future__ import annotations

import random

import pytest

from shrink.autosearch.allocate import Option, allocate, brute_force
from shrink.errors import ConfigError
from shrink.hw.policy import LayerChoice

BITS = (2, 4, 8, 16)


def _problem(seed: int, layers: int = 4, integer: bool = True) -> dict[str, list[Option]]:
    rng = random.Random(seed)
    out = {}
    for i in range(layers):
        params = rng.randint(10, 200)
        scale = rng.uniform(0.1, 5.0)
        opts = []
        for b in BITS:
            loss = scale * 4.0 ** (-b / 2) + rng.uniform(0, 0.01)  # fewer bits -> more loss
            cost = params * b if integer else params * b * rng.uniform(0.9, 1.1) / 8
            opts.append(Option(LayerChoice(bits=b), loss, {"bytes": cost, "latency": rng.uniform(1, 10) * b}))
        out[f"l{i}"] = opts
    return out


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("solver", ["milp", "dp"])
def test_optimal_on_small_problems(seed, solver):
    options = _problem(seed, integer=(solver == "dp" and seed % 2 == 0))
    full = sum(max(o.costs["bytes"] for o in opts) for opts in options.values())
    budget = {"bytes": full * random.Random(seed).uniform(0.3, 0.8)}
    got = allocate(options, budget, solver=solver)
    best = brute_force(options, budget)
    assert got.totals["bytes"] <= budget["bytes"] + 1e-9
    assert got.predicted_loss == pytest.approx(best.predicted_loss, rel=1e-9, abs=1e-12)


def test_hand_solvable_case():
    # two layers; 10 bytes: (8b, 2b) costs 10 with loss 0.1 + 1.0; (4b, 4b) costs 8 with loss 0.5 + 0.2 -> best
    a = [
        Option(LayerChoice(bits=2), 3.0, {"bytes": 2}),
        Option(LayerChoice(bits=4), 0.5, {"bytes": 4}),
        Option(LayerChoice(bits=8), 0.1, {"bytes": 8}),
    ]
    b = [
        Option(LayerChoice(bits=2), 1.0, {"bytes": 2}),
        Option(LayerChoice(bits=4), 0.2, {"bytes": 4}),
        Option(LayerChoice(bits=8), 0.0, {"bytes": 8}),
    ]
    for solver in ("milp", "dp"):
        got = allocate({"a": a, "b": b}, {"bytes": 10}, solver=solver)
        assert {n: c.bits for n, c in got.policy.items()} == {"a": 4, "b": 4}
        assert got.predicted_loss == pytest.approx(0.7)
        assert got.totals["bytes"] == 8


def test_two_budgets_milp():
    options = _problem(3)
    budgets = {
        "bytes": 0.6 * sum(max(o.costs["bytes"] for o in v) for v in options.values()),
        "latency": 0.5 * sum(max(o.costs["latency"] for o in v) for v in options.values()),
    }
    got = allocate(options, budgets)
    best = brute_force(options, budgets)
    assert got.totals["latency"] <= budgets["latency"] + 1e-9
    assert got.predicted_loss == pytest.approx(best.predicted_loss)
    with pytest.raises(ConfigError, match="dp solver handles exactly one budget"):
        allocate(options, budgets, solver="dp")


def test_dual_minimizes_bytes_under_a_loss_budget():
    options = _problem(5)
    loss8 = sum(o.loss for v in options.values() for o in v if o.choice.bits == 8)
    got = allocate(options, {"loss": loss8}, minimize="bytes")
    best = brute_force(options, {"loss": loss8}, minimize="bytes")
    assert got.predicted_loss <= loss8 + 1e-12
    assert got.totals["bytes"] == pytest.approx(best.totals["bytes"])
    bytes8 = sum(o.costs["bytes"] for v in options.values() for o in v if o.choice.bits == 8)
    assert got.totals["bytes"] <= bytes8


def test_infeasible_budget_names_the_floor():
    options = _problem(1)
    with pytest.raises(ConfigError, match="below the smallest achievable"):
        allocate(options, {"bytes": 1.0})
    with pytest.raises(ConfigError, match="solver"):
        allocate(options, {"bytes": 1e9}, solver="rl")


def _shifted(options: dict[str, list[Option]], scale: float, offsets: bool, seed: int) -> dict[str, list[Option]]:
    """The same problem with every loss times ``scale`` plus (optionally) a large constant per layer."""
    rng = random.Random(seed)
    out = {}
    for name, opts in options.items():
        shift = rng.uniform(10.0, 1000.0) if offsets else 0.0
        out[name] = [Option(o.choice, shift + scale * o.loss, dict(o.costs)) for o in opts]
    return out


@pytest.mark.parametrize("case", ["tiny sensitivities (1e-7)", "constant per-layer offsets", "both"])
def test_milp_matches_brute_force_on_every_budget(case):
    # HiGHS at its default gaps (1e-4 relative, 1e-6 absolute) stopped early on these: gap 0 must be proven optimal
    scale = 1e-7 if case != "constant per-layer offsets" else 1.0
    offsets = case != "tiny sensitivities (1e-7)"
    worse = checked = 0
    for seed in range(12):
        options = _shifted(_problem(seed, layers=5, integer=False), scale, offsets, seed)
        full = sum(max(o.costs["bytes"] for o in v) for v in options.values())
        for frac in (0.3, 0.4, 0.5, 0.6, 0.7):
            budget = {"bytes": full * frac}
            try:
                best = brute_force(options, budget)
            except ConfigError:
                continue
            got = allocate(options, budget, solver="milp")
            assert got.totals["bytes"] <= budget["bytes"] * (1 + 1e-12)
            checked += 1
            # compare the layer-offset-free losses: the offsets are the same for every policy
            worse += got.predicted_loss - best.predicted_loss > 1e-9 * abs(best.predicted_loss) + 1e-18
    assert checked >= 40 and worse == 0, f"milp worse than brute force on {worse} of {checked} budgets"


def test_dp_matches_brute_force_with_tiny_sensitivities_and_offsets():
    for seed in range(6):
        options = _shifted(_problem(seed, layers=5, integer=True), 1e-7, True, seed)
        full = sum(max(o.costs["bytes"] for o in v) for v in options.values())
        budget = {"bytes": float(int(full * 0.5))}
        got, best = allocate(options, budget, solver="dp"), brute_force(options, budget)
        assert got.policy == best.policy or got.predicted_loss == pytest.approx(best.predicted_loss, rel=1e-12)


def test_milp_solver_output_never_reaches_stdout(capfd):
    import warnings

    options = _problem(2, layers=6)
    full = sum(max(o.costs["bytes"] for o in v) for v in options.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "unrecognized option" warning either: mip_abs_gap reaches HiGHS
        got = allocate(options, {"bytes": full * 0.5})
    with pytest.raises(ConfigError):
        allocate(options, {"bytes": full * 0.5, "latency": 1e-9})
    out, _ = capfd.readouterr()
    assert out == "" and got.solver == "milp"
