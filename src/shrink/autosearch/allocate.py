"""Budgeted per-layer allocation: pick one option per layer minimizing the summed predicted loss subject to summed
costs within budgets (model bytes, latency, energy, BitOps) — or the dual: minimize one cost subject to a budget on
the predicted loss (``minimize="bytes", budgets={"loss": L}``).

Solved exactly: as a 0/1 integer program (``scipy.optimize.milp``, HiGHS run to a proven optimum with relative and
absolute gaps 0, its output kept off stdout; any number of budgets) or by dynamic programming
over one budget (multiple-choice knapsack; exact for integer costs, otherwise costs are rounded *up* to a grid of
``resolution`` steps, so the answer always respects the budget).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from shrink.errors import ConfigError
from shrink.hw.policy import LayerChoice

__all__ = ["Option", "Allocation", "allocate", "brute_force"]


@dataclass(frozen=True)
class Option:
    """One choice for one layer with its predicted loss increase and its costs by budget kind."""

    choice: LayerChoice
    loss: float
    costs: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Allocation:
    policy: dict[str, LayerChoice]
    predicted_loss: float
    totals: dict[str, float]
    solver: str


def _value(o: Option, kind: str) -> float:
    return o.loss if kind == "loss" else o.costs[kind]


def _check(options: Mapping[str, Sequence[Option]], budgets: Mapping[str, float]) -> None:
    if not options:
        raise ConfigError("allocate: no layers to allocate")
    for name, opts in options.items():
        if not opts:
            raise ConfigError(f"allocate: layer {name!r} has no option")
        for kind in budgets:
            if kind != "loss" and any(kind not in o.costs for o in opts):
                raise ConfigError(f"allocate: an option of layer {name!r} has no {kind!r} cost")
    for kind, limit in budgets.items():
        floor = sum(min(_value(o, kind) for o in opts) for opts in options.values())
        if floor > limit + 1e-12 * abs(limit):
            raise ConfigError(f"allocate: {kind} budget {limit:.6g} is below the smallest achievable {floor:.6g}")


def _result(
    options: Mapping[str, Sequence[Option]], picks: Mapping[str, int], budgets: Mapping[str, float], solver: str
) -> Allocation:
    chosen = {n: options[n][i] for n, i in picks.items()}
    kinds = {*budgets, *(k for o in chosen.values() for k in o.costs)}
    totals = {k: sum(_value(o, k) for o in chosen.values()) for k in sorted(kinds) if k != "loss"}
    totals["loss"] = sum(o.loss for o in chosen.values())
    return Allocation({n: o.choice for n, o in chosen.items()}, totals["loss"], totals, solver)


def allocate(
    options: Mapping[str, Sequence[Option]],
    budgets: Mapping[str, float],
    *,
    solver: str = "milp",
    minimize: str = "loss",
    resolution: int = 20000,
) -> Allocation:
    """The policy with the least summed ``minimize`` (default: predicted loss) whose summed costs are within every
    budget (a budget may also be on ``"loss"``)."""
    _check(options, budgets)
    if solver == "milp":
        return _milp(options, budgets, minimize)
    if solver == "dp":
        if len(budgets) != 1:
            raise ConfigError(f"allocate: the dp solver handles exactly one budget, got {sorted(budgets)}")
        return _dp(options, budgets, resolution, minimize)
    raise ConfigError(f"allocate: solver must be 'milp' or 'dp', got {solver!r}")


def _objective(options: Mapping[str, Sequence[Option]], names: list[str], minimize: str) -> np.ndarray:
    """Each option's ``minimize`` value less its layer's smallest, scaled to at most 1: the same argmin (one option
    per layer, so per-layer constants drop out), but no longer below HiGHS's absolute tolerances when sensitivities
    are tiny (1e-7) or sit on top of large constant offsets."""
    c = []
    for n in names:
        values = [_value(o, minimize) for o in options[n]]
        floor = min(values)
        c += [v - floor for v in values]
    arr = np.array(c, dtype=np.float64)
    top = float(arr.max()) if arr.size else 0.0
    return arr / top if top > 0 else arr


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null: HiGHS writes from C, past Python's ``sys.stdout``."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout at all: nothing to protect
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _milp(options: Mapping[str, Sequence[Option]], budgets: Mapping[str, float], minimize: str) -> Allocation:
    names = list(options)
    index = [(n, i) for n in names for i in range(len(options[n]))]
    c = _objective(options, names, minimize)
    rows, lb, ub = [], [], []
    for n in names:  # exactly one option per layer
        rows.append([1.0 if m == n else 0.0 for m, _ in index])
        lb.append(1.0)
        ub.append(1.0)
    for kind, limit in budgets.items():
        rows.append([_value(options[n][i], kind) for n, i in index])
        lb.append(-np.inf)
        ub.append(limit)
    # gap 0, relative and absolute: HiGHS stops only at a proven optimum (scipy passes mip_abs_gap on verbatim)
    highs = {"disp": False, "presolve": True, "mip_rel_gap": 0.0, "mip_abs_gap": 0.0}
    with _quiet_stdout(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unrecognized options detected", category=RuntimeWarning)
        res = milp(
            c,
            constraints=LinearConstraint(np.array(rows), lb, ub),
            integrality=np.ones(len(index)),
            bounds=Bounds(0, 1),
            options=highs,
        )
    if res.x is None:
        raise ConfigError(f"allocate: the integer program found no feasible policy ({res.message})")
    if res.status != 0:  # time or node limit: a feasible point, not a proven optimum
        raise ConfigError(f"allocate: the integer program stopped before proving optimality ({res.message})")
    picks = {n: i for (n, i), x in zip(index, res.x, strict=True) if x > 0.5}
    return _result(options, picks, budgets, "milp")


def _dp(
    options: Mapping[str, Sequence[Option]], budgets: Mapping[str, float], resolution: int, minimize: str
) -> Allocation:
    ((kind, limit),) = budgets.items()
    costs = [_value(o, kind) for opts in options.values() for o in opts]
    if min(costs) < 0:
        raise ConfigError(f"allocate: the dp solver needs non-negative {kind} costs; use solver='milp'")
    integral = all(float(c).is_integer() for c in costs) and float(limit).is_integer()
    unit: float = 1.0
    if integral:
        unit = math.gcd(*(int(c) for c in costs), int(limit)) or 1
        if limit / unit > 10 * resolution:  # too fine to tabulate exactly: fall through to rounding
            integral = False
    if not integral:
        unit = limit / resolution
    cap = int(math.floor(limit / unit + 1e-9))
    names = list(options)
    inf = float("inf")
    best = np.full(cap + 1, inf)
    best[0] = 0.0
    back: list[np.ndarray] = []
    for n in names:
        new = np.full(cap + 1, inf)
        arg = np.full(cap + 1, -1, dtype=np.int64)
        for i, o in enumerate(options[n]):
            w = _units(_value(o, kind), unit, integral)
            if w > cap:
                continue
            cand = np.full(cap + 1, inf)
            cand[w:] = best[: cap + 1 - w] + _value(o, minimize)
            better = cand < new
            new[better], arg[better] = cand[better], i
        back.append(arg)
        best = new
    r = int(np.argmin(best))
    if not np.isfinite(best[r]):
        raise ConfigError(f"allocate: no policy fits the {kind} budget {limit:.6g} at dp resolution {resolution}")
    picks: dict[str, int] = {}
    for n, arg in zip(reversed(names), reversed(back), strict=True):
        i = int(arg[r])
        picks[n] = i
        o = options[n][i]
        r -= _units(_value(o, kind), unit, integral)
    return _result(options, picks, budgets, "dp" if integral else f"dp (costs rounded up to {unit:.4g})")


def _units(cost: float, unit: float, integral: bool) -> int:
    return int(round(cost / unit)) if integral else int(math.ceil(cost / unit - 1e-9))


def brute_force(
    options: Mapping[str, Sequence[Option]], budgets: Mapping[str, float], minimize: str = "loss"
) -> Allocation:
    """Try every combination (tests and tiny problems only)."""
    _check(options, budgets)
    names = list(options)
    best: tuple[float, tuple[int, ...]] | None = None
    for combo in itertools.product(*(range(len(options[n])) for n in names)):
        picked = [options[n][i] for n, i in zip(names, combo, strict=True)]
        if all(sum(_value(o, k) for o in picked) <= lim + 1e-12 * abs(lim) for k, lim in budgets.items()):
            loss = sum(_value(o, minimize) for o in picked)
            if best is None or loss < best[0]:
                best = (loss, combo)
    if best is None:
        raise ConfigError("brute_force: no feasible policy")
    return _result(options, dict(zip(names, best[1], strict=True)), budgets, "brute force")
