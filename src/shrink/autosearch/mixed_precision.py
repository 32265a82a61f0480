"""Mixed precision (HAWQ-v2 / HAQ-style allocation, solved exactly): per-layer bit widths from {2, 4, 8, 16}
(optionally per-layer sparsity) minimizing the predicted loss under one budget — model bytes, latency or energy on a
hardware profile, or BitOps — then applied as low-bit layers (:mod:`shrink.autosearch.apply`: codes at their bit width,
fp32 compute on the dequantized weights, so accuracy figures are simulated; the report says so).

Byte budgets are held on the written file: the model is saved with :func:`shrink.save`, the file is read back and
checked, and the allocation is solved again if it misses (:mod:`shrink.autosearch.file_budget`). The file holds every
2-8-bit weight bit-packed at its width with fp32 per-channel scales and the 8-bit input grid, 16-bit weights in fp16,
32-bit layers and biases in fp32; :func:`shrink.load` rebuilds exactly the model the stage returned."""

from __future__ import annotations

import itertools
from typing import Literal

import pydantic
import torch
from torch import nn

from shrink.api import Context, implements
from shrink.autosearch.allocate import Allocation, Option, allocate
from shrink.autosearch.apply import apply_policy, calibrate_inputs
from shrink.autosearch.export import attach_int8_export
from shrink.autosearch.file_budget import fit_file
from shrink.autosearch.latency_plan import plan_latency
from shrink.autosearch.options import layer_options, option_costs, sensitivities, uniform_cost
from shrink.config import Config, register
from shrink.data import split_batch
from shrink.errors import ConfigError
from shrink.export.size import artifact_size
from shrink.hw.calibrate import calibrate, policy_features
from shrink.hw.layers import trace_layers
from shrink.hw.measured import LatencyTable
from shrink.hw.policy import LayerChoice, policy_to_dict
from shrink.hw.profile import load_profile
from shrink.select import Selector, select_modules

__all__ = ["MixedPrecision", "plan_mixed_precision", "mixed_precision"]


@register("mixed_precision", family="search")
class MixedPrecision(Config):
    """Per-layer bit widths (and sparsities) under a budget, allocated exactly by MILP or DP.

    The budget is ``budget_value`` (bytes / seconds / joules / BitOps), or the cost of the same layers at uniform
    ``budget_bits``, or ``budget_fraction`` of their fp32 cost; give exactly one. Bytes are those the model file
    holds for the selected layers (codes, scales, biases, input grids); the written file is checked against the
    budget plus the other layers' tensors plus ``HEADER_BYTES_PER_MODULE`` per module (see
    :mod:`shrink.autosearch.file_budget`). With ``latency_model=
    "calibrated"`` the fp32 cost is the fp32 model's end-to-end time measured by the calibration, so a fraction
    holds at the machine speed the answer is checked at.
    """

    #: candidate bit widths per layer, drawn from 2, 4, 8 (integer codes) and 16 (fp16)
    bits: tuple[int, ...] = (2, 4, 8, 16)
    sparsities: tuple[float, ...] = (0.0,)
    #: what the budget limits: file 'bytes', 'latency' (s) or 'energy' (J) on profile, or 'bitops'
    budget: Literal["bytes", "latency", "energy", "bitops"] = "bytes"
    #: the budget in its unit: bytes, seconds, joules or BitOps (one of budget_value / _bits / _fraction)
    budget_value: float | None = pydantic.Field(None, gt=0)
    #: budget = the cost of the selected layers all at this bit width (one of bits)
    budget_bits: int | None = None
    #: budget = this fraction of the selected layers' fp32 cost
    budget_fraction: float | None = pydantic.Field(None, gt=0, le=1)
    profile: str = "cpu"
    #: layer sensitivity: 'measured' output KL with one layer changed, or 'hessian' (HAWQ-v2 trace)
    sensitivity: Literal["measured", "hessian"] = "measured"
    sensitivity_batches: int = pydantic.Field(4, ge=1)
    #: exact allocator: 'milp' integer program (HiGHS) or 'dp' multiple-choice knapsack
    solver: Literal["milp", "dp"] = "milp"
    #: latency budgets on a measured profile: "table" sums the per-layer table; "calibrated" budgets end-to-end
    #: time (offset and int8/fp32 boundaries fitted to a few timings of this model, the answer measured and the
    #: allocation tightened up to ``verify`` times; see shrink.autosearch.latency_plan)
    latency_model: Literal["table", "calibrated"] = "table"
    #: calibrated latency: most allocations timed end to end and re-solved if over budget (0: prediction only)
    verify: int = pydantic.Field(4, ge=0)
    #: calibrated latency budgets: a measured answer is accepted only within budget x (1 - headroom), room for the
    #: machine's timing noise (the same model's time varies by ~5-10% from one measurement to the next on 2 cores)
    headroom: float = pydantic.Field(0.05, ge=0, lt=1)
    #: 8-bit inputs for layers at <= 8 bits (min-max ranges from calibration data); False: float inputs
    quantize_inputs: bool = True
    selector: Selector = Selector()

    @pydantic.model_validator(mode="after")
    def _one_budget(self) -> MixedPrecision:
        given = [f for f in ("budget_value", "budget_bits", "budget_fraction") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of budget_value, budget_bits, budget_fraction (got {given or 'none'})")
        for b in self.bits:
            if b not in (2, 4, 8, 16):
                raise ValueError(f"bits must be drawn from (2, 4, 8, 16), got {b}")
        if self.budget_bits is not None and self.budget_bits not in self.bits:
            raise ValueError(f"budget_bits {self.budget_bits} is not among bits {self.bits}")
        for s in self.sparsities:
            if not 0 <= s < 1:
                raise ValueError(f"sparsities must be in [0, 1), got {s}")
        return self


def plan_mixed_precision(model: nn.Module, config: MixedPrecision, ctx: Context) -> tuple[Allocation, float]:
    """Sensitivities, options and the exact allocation; returns it with the budget used."""
    plan, budget, _ = _plan(model, config, ctx)
    return plan, budget


def _plan(model: nn.Module, config: MixedPrecision, ctx: Context) -> tuple[Allocation, float, dict[str, list[Option]]]:
    layers = list(select_modules(model, config.selector, where="mixed_precision.selector"))
    if ctx.example_inputs is None:
        raise ConfigError("mixed_precision: needs example_inputs (to trace layer shapes)")
    profile = load_profile(config.profile) if config.budget in ("latency", "energy") else None
    if config.budget == "energy" and profile is not None and profile.kind != "accelerator":
        raise ConfigError(
            f"mixed_precision: an energy budget needs an accelerator profile; {profile.name!r} is "
            "measured (latency only)"
        )
    table = LatencyTable(profile.measured) if profile is not None and profile.measured is not None else None
    specs = [s for s in trace_layers(model, ctx.example_inputs) if s.name in layers]
    choices = [LayerChoice(bits=b, sparsity=s) for b, s in itertools.product(config.bits, config.sparsities)]
    data = _sensitivity_data(ctx)
    qparams = (
        calibrate_inputs(model, [s.name for s in specs], ctx.calibration or data or [])
        if config.quantize_inputs
        else None
    )
    sens = sensitivities(
        model,
        [s.name for s in specs],
        choices,
        data,
        config.sensitivity,
        batches=config.sensitivity_batches,
        input_qparams=qparams,
    )
    options = layer_options(specs, choices, sens, profile, table, quantized_inputs=config.quantize_inputs)
    if config.budget == "latency" and config.latency_model == "calibrated":
        return (*_calibrated(model, config, ctx, options, profile, table), options)
    if config.budget_value is not None:
        budget = config.budget_value
    elif config.budget_bits is not None:
        budget = uniform_cost(options, LayerChoice(bits=config.budget_bits), config.budget)
    else:
        assert config.budget_fraction is not None
        fp32 = sum(option_costs(s, LayerChoice(), profile, table)[config.budget] for s in specs)
        budget = config.budget_fraction * fp32
    return allocate(options, {config.budget: budget}, solver=config.solver), budget, options


def _calibrated(model, config: MixedPrecision, ctx: Context, options, profile, table) -> tuple[Allocation, float]:
    if profile is None or profile.kind != "measured" or table is None:
        raise ConfigError("mixed_precision: latency_model 'calibrated' needs a measured profile (e.g. 'cpu')")
    if not isinstance(ctx.example_inputs, torch.Tensor):
        raise ConfigError("mixed_precision: latency_model 'calibrated' needs a tensor example input")
    inputs = [split_batch(b)[0] for _, b in zip(range(4), ctx.calibration or ctx.train or [], strict=False)]
    if not inputs:
        raise ConfigError("mixed_precision: latency_model 'calibrated' needs calibration data (int8 ranges)")
    all_specs = trace_layers(model, ctx.example_inputs)
    cal = None
    if config.budget_value is not None:
        budget = config.budget_value
    else:
        cal = calibrate(model, ctx.example_inputs, inputs, profile, table)
        if config.budget_bits:  # the uniform policy's calibrated prediction
            uniform = {n: LayerChoice(bits=config.budget_bits) for n in options} if config.budget_bits < 32 else {}
            budget = cal.predict_ms(policy_features(all_specs, uniform, profile, table)) / 1e3
        else:  # a fraction of the fp32 model's time measured by the calibration, at the speed the plan is checked at
            budget = cal.fp32_ms / 1e3 * (config.budget_fraction or 1.0)
    plan = plan_latency(
        model,
        options,
        all_specs,
        budget,
        profile,
        table,
        ctx.example_inputs,
        inputs,
        solver=config.solver,
        verify=config.verify,
        headroom=config.headroom,
        calibration_fit=cal,
    )
    c = plan.calibration
    ctx.notes.append(
        f"latency calibrated on end-to-end timings: {c.describe()}; allocations measured end to end "
        "(predicted -> measured ms): " + ", ".join(f"{p * 1e3:.3f} -> {m * 1e3:.3f}" for p, m in plan.checks)
    )
    return plan.allocation, budget


def _sensitivity_data(ctx: Context):
    """Labelled data for sensitivities: calibration batches, else validation, else training data."""
    for data in (ctx.calibration, ctx.val, ctx.train):
        if data is not None:
            return data
    return None


@implements(MixedPrecision)
def mixed_precision(model: nn.Module, config: MixedPrecision, ctx: Context) -> nn.Module:
    """Allocate bit widths under the budget and store each layer at its width (simulated compute); byte budgets are
    checked on the written file."""
    plan, budget, options = _plan(model, config, ctx)
    data = ctx.calibration or ctx.val or ctx.train
    qparams = calibrate_inputs(model, list(plan.policy), data or []) if config.quantize_inputs else None
    if config.budget == "bytes":
        planned = plan.policy
        out, plan, checks = fit_file(model, options, plan, budget, solver=config.solver, input_qparams=qparams)
        if plan.policy != planned:
            ctx.notes.append(
                "mixed precision: the first allocation's file missed the byte budget ("
                + "; ".join(c.describe() for c in checks[:-1])
                + "); solved again with the budget lowered by the excess"
            )
        file_note = f"file check: {checks[-1].describe()}"
    else:
        out = apply_policy(model, plan.policy, input_qparams=qparams, inplace=True)
        size = artifact_size(out)
        file_note = f"written file {size.total:,} B ({size.header:,} B header and manifest)"
    out.shrink_policy = policy_to_dict(plan.policy)  # type: ignore[assignment]
    attach_int8_export(out, plan.policy, data)
    chosen = ", ".join(f"{n}={c.label()}" for n, c in plan.policy.items())
    ctx.notes.append(
        f"mixed precision ({plan.solver}, {config.sensitivity} sensitivity): {chosen}; "
        f"{config.budget} {plan.totals[config.budget]:.6g} of budget {budget:.6g} on {config.profile}; {file_note}"
    )
    ctx.notes.append(
        "mixed precision: weights stored at their bit width (2-8: int codes bit-packed in the file, 16: fp16), "
        "compute on dequantized fp32 weights (simulated accuracy); real int8 kernels only via ONNX export"
    )
    return out
