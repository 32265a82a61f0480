"""Automated compression search in the spirit of AMC and HAQ, with the hardware profile in the loop.

1. Per-layer options (bit width x sparsity x kept channel width) get a predicted loss (output KL when only that
   layer is compressed) and a cost on the profile (measured CPU table or accelerator roofline).
2. A sweep of budgets from the cheapest achievable allocation to the dearest gives candidate policies, each the exact
   (MILP) loss-minimizing allocation for its budget; the uniform policies (every layer at one bit width and one
   kept width: plain channel pruning, plain int8, and both) join them; candidates are re-priced with channel widths
   propagated (on a measured profile with ``latency_model="calibrated"``: end to end, see shrink.hw.calibrate,
   fitted on the model and on a copy with the layers it may prune at the narrowest searched width).
3. Candidates are measured — channels removed, fine-tuned for ``finetune_epochs`` (the recovery budget a single
   technique gets), fake-quantized, metric on validation data — in parallel trials (Ray), cheapest predicted first,
   ``parallel`` per round; the search stops after the first round with a candidate within ``tolerance`` and
   returns the cheapest such one (every cheaper candidate was measured and failed). Points not measured keep only
   their prediction; the result says which is which. With ``objective="latency"`` on a measured profile (and
   ``time_candidates``) one more round is measured, every candidate within tolerance is built as the model that
   really runs (ONNX Runtime, int8 kernels for its <= 8-bit layers) and timed end to end, all together, and the
   fastest measured one is kept: the cost model ranks candidates, the machine decides between close ones.
4. Refinement (AMC-style local search, ``refine`` trials at most): from the chosen point, every prunable layer in
   turn is narrowed one step on the ``widths`` grid; the neighbours are measured the same way, and the cheapest
   predicted one within tolerance becomes the new point, until no neighbour passes or the trials run out. The
   answer is the cheapest point within tolerance: by measured latency where candidates were timed, else predicted.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pydantic
import torch
from torch import nn

from shrink.api import Context, implements
from shrink.autosearch.allocate import Option, allocate
from shrink.autosearch.compress import compress, remove_channels, width_layers
from shrink.autosearch.export import attach_int8_export
from shrink.autosearch.latency_plan import calibrated_options
from shrink.autosearch.options import layer_options, policy_file_bytes
from shrink.autosearch.result import Point, SearchResult
from shrink.autosearch.sensitivity import logits_of, output_kl
from shrink.autosearch.trials import listed, run_trials
from shrink.config import Config, register
from shrink.data import split_batch
from shrink.errors import ConfigError, DataError
from shrink.eval.latency import repeat_batch
from shrink.eval.metrics import accuracy, predict
from shrink.export.size import artifact_size
from shrink.hw.calibrate import Calibration, calibrate, interleaved_latency_ms, policy_features
from shrink.hw.estimate import policy_costs
from shrink.hw.layers import LayerSpec, input_widths, trace_layers
from shrink.hw.measured import LatencyTable, execution_kind
from shrink.hw.ort_int8 import int8_sessions
from shrink.hw.policy import LayerChoice, policy_from_dict, policy_to_dict
from shrink.hw.profile import Profile, load_profile
from shrink.select import Selector, select_modules

__all__ = ["CompressionSearch", "TrialData", "run_search", "compression_search", "evaluate_policy"]


@register("search", family="search")
class CompressionSearch(Config):
    """Search per-layer bit widths, sparsities and channel widths for the cheapest model (``objective`` on
    ``profile``) whose measured metric drop on validation data is at most ``tolerance`` points.

    Trials run ``parallel`` at a time on Ray (``backend="ray"``, a local instance unless ``ray_address`` names a
    cluster) or one by one in-process (``"local"``). Each trial fine-tunes ``finetune_epochs`` after removing
    channels, then fake-quantizes (simulated accuracy; real int8 only through ONNX export).
    """

    profile: str = "cpu"
    #: what "cheapest" means: latency or energy on the profile, bytes of the written file, or bit operations
    objective: Literal["latency", "bytes", "energy", "bitops"] = "latency"
    #: largest accepted drop of the validation metric (accuracy points) below the uncompressed model
    tolerance: float = pydantic.Field(1.0, ge=0)
    #: candidate weight bit widths per layer, from (2, 4, 8, 16, 32); 32 leaves a layer in float
    bits: tuple[int, ...] = (8, 32)
    sparsities: tuple[float, ...] = (0.0,)
    #: candidate fractions of channels kept in each prunable layer (1.0: not pruned)
    widths: tuple[float, ...] = (1.0, 0.75, 0.5)
    #: budgets swept from the cheapest achievable to the fp32 cost; each gives one exact (MILP) allocation
    candidates: int = pydantic.Field(8, ge=2, le=64)
    #: trials measured at the same time (one round of the scan)
    parallel: int = pydantic.Field(2, ge=1)
    #: "ray": trials run in Ray workers; "local": one after another in this process
    backend: Literal["ray", "local"] = "ray"
    #: Ray cluster to join (None: $RAY_ADDRESS, else a fresh local instance with `parallel` CPUs)
    ray_address: str | None = None
    #: fine-tuning epochs each trial gets after its channels are removed, before it is measured
    finetune_epochs: int = pydantic.Field(2, ge=0)
    lr: float = pydantic.Field(1e-3, gt=0)
    sensitivity_batches: int = pydantic.Field(4, ge=1)
    #: add the uniform policies (one bit width and one kept width for every layer) to the candidates
    uniform: bool = True
    #: latency on a measured profile: "table" sums per-layer entries; "calibrated" predicts end-to-end time
    latency_model: Literal["table", "calibrated"] = "table"
    #: measured neighbours tried after the scan (one layer one width step narrower at a time); 0 turns refinement off
    refine: int = pydantic.Field(8, ge=0)
    #: batch size at which latency / energy are priced (the example input's first item repeated)
    cost_batch: int = pydantic.Field(1, ge=1)
    #: latency on a measured profile: time the candidates within tolerance end to end and keep the fastest measured
    time_candidates: bool = True
    #: seeds the order of the training batches and every trial's fine-tuning: same seed, same search result
    seed: int = pydantic.Field(0, ge=0, lt=2**32)
    selector: Selector = Selector()

    @pydantic.model_validator(mode="after")
    def _choices(self) -> CompressionSearch:
        for b in self.bits:
            if b not in (2, 4, 8, 16, 32):
                raise ValueError(f"bits must be drawn from (2, 4, 8, 16, 32), got {b}")
        if any(not 0 <= s < 1 for s in self.sparsities) or any(not 0 < w <= 1 for w in self.widths):
            raise ValueError("sparsities must be in [0, 1) and widths in (0, 1]")
        return self


def _metric(model: nn.Module, data: Sequence[Any]) -> float:
    out, target = predict(model, data)
    return accuracy(out, target)


@dataclass(frozen=True)
class TrialData:
    """What every trial gets (put in Ray's object store once): the model to compress, the data splits and the
    fine-tuning settings."""

    model: nn.Module
    val: list[Any]
    calibration: list[Any]
    train: list[Any] | None
    example_inputs: Any
    finetune_epochs: int
    lr: float
    seed: int


@dataclass
class _Space:
    """The searched layers: their traced shapes, each one's choices, predicted losses and option costs."""

    all_specs: list[LayerSpec]  # every traced layer (costs of a policy need all of them)
    specs: list[LayerSpec]  # the selected ones
    prunable: set[str]
    choices: dict[str, list[LayerChoice]]
    sensitivity: dict[str, dict[LayerChoice, float]]
    options: dict[str, list[Option]]

    def loss_of(self, policy: dict[str, LayerChoice]) -> float:
        """The additive prediction: each compressed layer's output KL when only it is compressed."""
        return sum(self.sensitivity[n][c] for n, c in policy.items())


@dataclass
class _Pricer:
    """A policy's predicted cost on the profile for the search objective (calibrated end-to-end latency when
    ``calibrated`` is set, the file's bytes for "bytes", else the per-layer sum)."""

    kind: str
    all_specs: list[LayerSpec]
    profile: Profile
    table: LatencyTable | None
    calibrated: Calibration | None = None

    def __call__(self, policy: dict[str, LayerChoice]) -> float:
        if self.calibrated is not None:
            assert self.table is not None
            return self.calibrated.predict_ms(policy_features(self.all_specs, policy, self.profile, self.table)) / 1e3
        if self.kind == "bytes":  # what the file of the applied policy holds for these layers
            return float(policy_file_bytes(self.all_specs, policy))
        costs = policy_costs(self.all_specs, policy, self.profile, self.table)
        if self.kind == "latency":
            return sum(c.latency_s for c in costs)
        if self.kind == "energy":
            return sum(c.energy_j or 0.0 for c in costs)
        return sum(c.bitops for c in costs)


def evaluate_policy(data: TrialData, policy: dict[str, dict[str, Any]]) -> tuple[float, nn.Module]:
    """One trial (runs in a Ray worker): the compressed model and its validation metric."""
    model = compress(
        data.model,
        policy_from_dict(policy),
        example_inputs=data.example_inputs,
        calibration=data.calibration,
        train=data.train,
        finetune_epochs=data.finetune_epochs,
        lr=data.lr,
        seed=data.seed,
    )
    return _metric(model, data.val), model


def _sensitivity(
    model: nn.Module, names: list[str], choices: dict[str, list[LayerChoice]], data: TrialData, batches: int
) -> dict[str, dict[LayerChoice, float]]:
    held = data.calibration[:batches]
    reference = logits_of(model, held)
    out: dict[str, dict[LayerChoice, float]] = {}
    for name in names:
        out[name] = {}
        for c in choices[name]:
            if c == LayerChoice():
                out[name][c] = 0.0
                continue
            trial = compress(model, {name: c}, example_inputs=data.example_inputs, calibration=held)
            out[name][c] = output_kl(trial, held, reference)
    return out


def _trial_data(model: nn.Module, config: CompressionSearch, ctx: Context) -> TrialData:
    """The data every trial shares; missing example inputs or validation data are errors."""
    if ctx.example_inputs is None:
        raise ConfigError("search: needs example_inputs (to trace layer shapes)")
    val = listed(ctx.val, config.seed)
    if not val:
        raise DataError("search: needs labelled validation data (val=...) to measure candidates")
    return TrialData(
        model=model,
        val=val,
        calibration=listed(ctx.calibration or ctx.train, config.seed, 8),
        train=listed(ctx.train, config.seed) if config.finetune_epochs else None,
        example_inputs=ctx.example_inputs,
        finetune_epochs=config.finetune_epochs,
        lr=config.lr,
        seed=config.seed,
    )


def _space(
    data: TrialData, config: CompressionSearch, priced_inputs: Any, profile: Profile, table: LatencyTable | None
) -> _Space:
    """Trace the selected layers, list their choices and predict each choice's loss and costs."""
    model = data.model
    layers = list(select_modules(model, config.selector, where="search.selector"))
    all_specs = trace_layers(model, priced_inputs)
    specs = [s for s in all_specs if s.name in layers]
    prunable = set(width_layers(model, data.example_inputs))
    choices = {
        s.name: list(
            dict.fromkeys(
                LayerChoice(bits=b, sparsity=sp, width=w if s.name in prunable else 1.0)
                for b, sp, w in itertools.product(config.bits, config.sparsities, config.widths)
            )
        )
        for s in specs
    }
    sens = _sensitivity(model, [s.name for s in specs], choices, data, config.sensitivity_batches)
    fed = input_widths(all_specs, {n: 0.5 for n in prunable})  # layers fed by a prunable layer
    follow = frozenset(n for n in prunable if fed.get(n, 1.0) < 1.0)
    options: dict[str, list[Option]] = {}
    for spec in specs:
        options |= layer_options([spec], choices[spec.name], sens, profile, table, follow)
    return _Space(all_specs, specs, prunable, choices, sens, options)


def _candidates(space: _Space, priced: _Pricer, config: CompressionSearch) -> list[Point]:
    """The uniform policies and the exact allocations for a sweep of budgets, cheapest predicted first (c0, c1, ...)."""
    kind = config.objective
    points: dict[str, Point] = {}

    def add(policy: dict[str, LayerChoice], loss: float) -> None:
        policy = {n: c for n, c in policy.items() if c != LayerChoice()}
        key = repr(sorted(policy_to_dict(policy).items()))
        if key not in points:
            points[key] = Point(
                label="", policy=policy_to_dict(policy), predicted_cost=priced(policy), predicted_loss=loss
            )

    if config.uniform:
        for b, w in itertools.product(config.bits, config.widths):
            policy = {s.name: LayerChoice(bits=b, width=w if s.name in space.prunable else 1.0) for s in space.specs}
            add(policy, space.loss_of({n: c for n, c in policy.items() if c != LayerChoice()}))
    # the sweep runs from the cheapest allocation to the dearest, both in the options' own units (calibrated
    # latency shares where the options are calibrated)
    floor = sum(min(o.costs[kind] for o in opts) for opts in space.options.values())
    top = sum(max(o.costs[kind] for o in opts) for opts in space.options.values())
    for i in range(config.candidates):
        budget = floor * (top / floor) ** (i / (config.candidates - 1)) if floor > 0 else top * i / config.candidates
        plan = allocate(space.options, {kind: budget * (1 + 1e-9)})
        add(plan.policy, plan.predicted_loss)
    ordered = sorted(points.values(), key=lambda p: p.predicted_cost)
    for i, p in enumerate(ordered):
        p.label = f"c{i}"
    return ordered


def _narrowest(model: nn.Module, space: _Space, config: CompressionSearch, ctx: Context) -> list[nn.Module]:
    """A copy of ``model`` with every layer the search may prune (selected and prunable) at the narrowest searched
    width, for the calibrated latency model to see how costs scale with width (none when nothing is pruned)."""
    narrow = min(config.widths)
    pruned = sorted(space.prunable & set(space.choices))
    if narrow >= 1.0 or not pruned:
        return []
    return [remove_channels(copy.deepcopy(model), dict.fromkeys(pruned, narrow), ctx.example_inputs)]


def run_search(model: nn.Module, config: CompressionSearch, ctx: Context) -> tuple[SearchResult, nn.Module]:
    """Run the search; returns the result (all points, which were measured) and the chosen model."""
    data = _trial_data(model.eval(), config, ctx)
    profile = load_profile(config.profile)
    if config.objective == "energy" and profile.kind != "accelerator":
        raise ConfigError(f"search: objective 'energy' needs an accelerator profile, {profile.name!r} is measured")
    table = LatencyTable(profile.measured) if profile.measured is not None else None
    priced_inputs = repeat_batch(ctx.example_inputs, config.cost_batch)
    space = _space(data, config, priced_inputs, profile, table)
    priced = _Pricer(config.objective, space.all_specs, profile, table)
    inputs = [split_batch(b)[0] for b in data.calibration[:4]]  # int8 activation ranges of timed models
    if config.objective == "latency" and config.latency_model == "calibrated":
        if table is None or not isinstance(priced_inputs, torch.Tensor):
            raise ConfigError("search: latency_model 'calibrated' needs a measured profile and a tensor input")
        priced.calibrated = calibrate(
            data.model, priced_inputs, inputs, profile, table, thinner=_narrowest(data.model, space, config, ctx)
        )
        space.options = calibrated_options(space.options, {s.name: s for s in space.specs}, priced.calibrated, profile)
    ordered = _candidates(space, priced, config)
    baseline = _metric(data.model, data.val)
    timer = None
    timed = config.objective == "latency" and table is not None and config.time_candidates
    if timed and isinstance(priced_inputs, torch.Tensor):
        timer = _Timer(data.model, priced_inputs, inputs, ctx.example_inputs, profile)
    best = _scan(ordered, data, config, baseline, extra_rounds=1 if timer else 0)
    if best is not None and timer is not None:
        best = timer.fastest(_passing(ordered, baseline, config.tolerance))
    if best is not None and config.refine:
        grid = sorted(set(config.widths), reverse=True)
        layers = sorted(space.prunable & set(space.choices))
        ordered += _refine(best, ordered, layers, grid, (priced, space.loss_of), data, config, baseline)
        passing = _passing(ordered, baseline, config.tolerance)
        best = timer.fastest(passing) if timer else min(passing, key=lambda p: p.predicted_cost)
    result = SearchResult(
        points=ordered,
        baseline_metric=baseline,
        tolerance=config.tolerance,
        objective=config.objective,
        profile=profile.name,
        best=best.label if best else None,
        baseline_cost=priced({}),
    )
    return result, (best.model if best is not None else data.model)


def _passing(points: list[Point], baseline: float, tolerance: float) -> list[Point]:
    """The measured points whose metric drop is within ``tolerance``."""
    return [p for p in points if p.measured and baseline - (p.measured_metric or 0.0) <= tolerance]


def _scan(
    ordered: list[Point], data: TrialData, config: CompressionSearch, baseline: float, extra_rounds: int = 0
) -> Point | None:
    """Measure candidates cheapest first, ``parallel`` per round, until a round has one within tolerance (and
    ``extra_rounds`` more); return the cheapest predicted such candidate. No monotonicity is assumed."""
    first: Point | None = None
    left = extra_rounds
    for start in range(0, len(ordered), config.parallel):
        picks = list(range(start, min(start + config.parallel, len(ordered))))
        results = run_trials(
            evaluate_policy,
            data,
            [ordered[i].policy for i in picks],
            backend=config.backend,
            parallel=config.parallel,
            address=config.ray_address,
        )
        for i, (metric, trained) in zip(picks, results, strict=True):
            ordered[i].measured_metric = metric
            ordered[i].model = trained
        if first is not None:
            left -= 1
        else:
            passing = [i for i in picks if baseline - (ordered[i].measured_metric or 0.0) <= config.tolerance]
            first = ordered[passing[0]] if passing else None
        if first is not None and left <= 0:
            break
    return first


class _Timer:
    """End-to-end latency of candidates on a measured profile: each policy built as the model that really runs
    (channels removed, its <= 8-bit layers on ONNX Runtime's int8 kernels; weights do not change the time, so no
    fine-tuning) and all timed together in interleaved rounds."""

    def __init__(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        calibration: list[torch.Tensor],
        example_inputs: Any,
        profile: Profile,
    ) -> None:
        assert profile.measured is not None
        self.model, self.inputs, self.spec = model, inputs, profile.measured
        self.calibration, self.example_inputs = calibration, example_inputs

    def fastest(self, points: list[Point]) -> Point:
        """Time ``points`` together, record each one's ``measured_cost`` (seconds) and return the fastest."""
        configs = []
        for p in points:
            policy = policy_from_dict(p.policy)
            thin = compress(
                self.model,
                {n: LayerChoice(width=c.width) for n, c in policy.items()},
                example_inputs=self.example_inputs,
                calibration=self.calibration,
            )
            configs.append((thin, [n for n, c in policy.items() if execution_kind(c, self.spec) == "int8"]))
        sessions = int8_sessions(configs, self.inputs, self.calibration, self.spec.threads)
        for p, ms in zip(points, interleaved_latency_ms(sessions, self.inputs, threads=self.spec.threads), strict=True):
            p.measured_cost = ms / 1e3
        return min(points, key=lambda p: p.measured_cost or 0.0)


def _narrower(policy: dict[str, dict[str, Any]], layer: str, grid: list[float]) -> dict[str, LayerChoice] | None:
    """``policy`` with ``layer`` one step narrower on ``grid`` (None when it is already the narrowest)."""
    choices = policy_from_dict(policy)
    now = choices.get(layer, LayerChoice())
    smaller = [w for w in grid if w < now.width - 1e-9]
    if not smaller:
        return None
    return {**choices, layer: LayerChoice(bits=now.bits, sparsity=now.sparsity, width=smaller[0])}


def _refine(
    start: Point,
    known: list[Point],
    layers: list[str],
    grid: list[float],
    predict: tuple[Callable[[dict[str, LayerChoice]], float], Callable[[dict[str, LayerChoice]], float]],
    data: TrialData,
    config: CompressionSearch,
    baseline: float,
) -> list[Point]:
    """Greedy local search from ``start``: measure the one-step-narrower neighbours (cheaper predicted than the
    current point, not seen before), move to the cheapest one within tolerance, stop when none passes or after
    ``config.refine`` trials. Returns the new points (labelled r0, r1, ...)."""
    priced, loss_of = predict
    seen = {repr(sorted(p.policy.items())) for p in known}
    new: list[Point] = []
    current, budget = start, config.refine
    while budget > 0:
        neighbours = []
        for layer in layers:
            policy = _narrower(current.policy, layer, grid)
            if policy is None:
                continue
            as_dict = policy_to_dict(policy)
            key = repr(sorted(as_dict.items()))
            cost = priced(policy)
            if key in seen or cost >= current.predicted_cost:
                continue
            seen.add(key)
            neighbours.append(Point(label="", policy=as_dict, predicted_cost=cost, predicted_loss=loss_of(policy)))
        neighbours = sorted(neighbours, key=lambda p: p.predicted_cost)[:budget]
        if not neighbours:
            break
        budget -= len(neighbours)
        results = run_trials(
            evaluate_policy,
            data,
            [p.policy for p in neighbours],
            backend=config.backend,
            parallel=config.parallel,
            address=config.ray_address,
        )
        for p, (metric, trained) in zip(neighbours, results, strict=True):
            p.label, p.measured_metric, p.model = f"r{len(new)}", metric, trained
            new.append(p)
        passing = [p for p in neighbours if baseline - (p.measured_metric or 0.0) <= config.tolerance]
        if not passing:
            break
        current = passing[0]  # neighbours are sorted cheapest first
    return new


@implements(CompressionSearch)
def compression_search(model: nn.Module, config: CompressionSearch, ctx: Context) -> nn.Module:
    """Search and return the chosen model (fake-quant simulated; channel removal real)."""
    result, chosen = run_search(model, config, ctx)
    best = result.point(result.best) if result.best else None
    measured = sum(p.measured_metric is not None for p in result.points)
    ctx.notes.append(
        f"search on {result.profile} ({result.objective}): {len(result.points)} candidates, {measured} "
        f"measured on validation data, the rest predicted only"
    )
    if best is None:
        ctx.notes.append(f"search: no candidate within {config.tolerance} points; the model is returned unchanged")
        return model
    ctx.notes.append(
        f"search chose {best.label}: {best.summary()}; predicted {result.objective} "
        f"{best.predicted_cost:.4g} vs fp32 {result.baseline_cost:.4g}; validation metric "
        f"{best.measured_metric:.2f} vs {result.baseline_metric:.2f}"
    )
    ctx.notes.append("search: quantized layers are fake-quant (simulated); removed channels are real")
    size = artifact_size(chosen)
    predicted = f" (searched layers predicted {best.predicted_cost:,.0f} B)" if result.objective == "bytes" else ""
    ctx.notes.append(
        f"search: the chosen model's file is {size.total:,} B{predicted}, {size.header:,} B of it header and manifest"
    )
    if ctx.out_dir is not None:
        result.write(ctx.out_dir)
    chosen.shrink_policy = best.policy  # type: ignore[assignment]
    attach_int8_export(chosen, policy_from_dict(best.policy), ctx.calibration or ctx.train)
    return chosen
