"""Hardware-aware automation (issue 5): mixed precision on the digits CNN under byte and latency budgets, the
compression search with a 1-point tolerance against single techniques, and the CPU cost model against measurement.

Accuracies of fake-quant models are measured on the test split but simulated (fp32 kernels on quantized values);
every latency is measured end to end in ONNX Runtime (2 threads) on the model that really runs: int8 QDQ kernels for
layers at <= 8 bits, fp32 for the rest (kept fp32 even between int8 layers), removed channels physically gone. The
CPU profile's per-layer table holds marginal layer times (layer session minus an empty session); the allocator and
the search price policies end to end with the table times scaled to the whole fp32 model's time, an offset, a cost
for each place where int8 and fp32 layers meet and a credit for int8 layers in a row, fitted to timings of the model
(shrink.hw.calibrate), and the latency-budget allocation is measured and tightened until the measurement fits (the
budget is a fixed 0.85 x fp32; the final check times fp32, all-int8 and the chosen policy together).
Configurations compared with each other are always timed together, in interleaved rounds normalized by each round's
mean. Search and single techniques get the same recovery budget (2 fine-tuning epochs after channel removal) and are
timed together, interleaved.
Search trials run in-process here (2 per round); tests/search/test_search_ray.py checks that the same search on a
local Ray instance measures the same points.
"""

from __future__ import annotations

import math
import random
import tempfile
from pathlib import Path

import torch

import shrink
from benchmarks.common import Section, Table, Target, save_png
from shrink.api import Context, apply
from shrink.autosearch.allocate import allocate
from shrink.autosearch.apply import apply_policy, calibrate_inputs
from shrink.autosearch.compress import compress
from shrink.autosearch.mixed_precision import MixedPrecision, plan_mixed_precision
from shrink.autosearch.options import layer_options, sensitivities, uniform_cost
from shrink.autosearch.search import CompressionSearch, run_search
from shrink.autosearch.trials import shutdown_ray
from shrink.errors import ConfigError
from shrink.eval.latency import repeat_batch
from shrink.eval.metrics import accuracy, predict
from shrink.export.onnx import OnnxModel, to_onnxruntime
from shrink.export.onnx import onnx as export_onnx
from shrink.hw import LatencyTable, LayerChoice, estimate, load_profile, trace_layers
from shrink.hw.calibrate import calibrate, interleaved_latency_ms, policy_features
from shrink.hw.estimate import rank_correlation
from shrink.hw.ort_int8 import int8_session, int8_sessions
from shrink.hw.validate import check_profile
from shrink.pruning.magnitude import MagnitudePruning
from shrink.pruning.structured import ChannelPruning
from shrink.quant.layers.lowbit import LowBitConv, LowBitLinear
from shrink.train import fit
from shrink.zoo import digits_data, digits_teacher

TITLE = "Hardware-aware search and mixed precision"
BATCH = 32  # latency is priced and measured at this batch (the digits layers are overhead-bound at batch 1)
EQUAL = 100 / 360  # "equal accuracy": within one test image of 360
#: the accuracy the search and the single techniques it is compared with may lose against fp32 (points)
TOLERANCE_POINTS = 1.0


def _acc(model, data) -> float:
    out, target = predict(model, data)
    return accuracy(out, target)


def _bits(policy) -> str:
    return ", ".join(f"{n}={c.label()}" for n, c in policy.items())


def run(quick: bool) -> Section:
    torch.manual_seed(0)
    data = digits_data()
    model = digits_teacher(progress=False)
    names = [s.name for s in trace_layers(model, data.example_inputs)]
    xb = repeat_batch(data.example_inputs, BATCH)
    calib = [b[0] for _, b in zip(range(4), data.calibration, strict=False)]
    ctx = Context(
        example_inputs=data.example_inputs, calibration=data.calibration, val=data.val, train=data.train, progress=False
    )
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # planning and trials; timings below set their own 2 threads
    section = Section(TITLE, intro=__doc__ or "")
    try:
        _mixed_precision(section, model, data, ctx, names)
        _mixed_kernels(section, model, data)
        profile = load_profile("cpu")
        table = LatencyTable(profile.measured)  # the cached table the search and the allocator use
        _latency_budget(section, model, data, ctx, xb, calib, table)
        _search_vs_single(section, model, data, ctx, xb, calib, table, quick)
    finally:
        torch.set_num_threads(old_threads)
        shutdown_ray()
    return section


def _mixed_precision(section: Section, model, data, ctx, names) -> None:
    qp = calibrate_inputs(model, names, data.calibration)
    fp32 = _acc(model, data.test)
    uniform = {
        b: _acc(apply_policy(model, {n: LayerChoice(bits=b) for n in names}, input_qparams=qp), data.test)
        for b in (4, 8)
    }
    plan4, budget4 = plan_mixed_precision(model, MixedPrecision(budget="bytes", budget_bits=4), ctx)
    mixed4 = _acc(apply_policy(model, plan4.policy, input_qparams=qp), data.test)
    # at the 8-bit budget: the dual problem, fewest bytes under a predicted-loss budget, swept upward from uniform
    # 8-bit's predicted loss; the smallest policy whose *validation* accuracy matches uniform 8-bit's is kept
    specs = trace_layers(model, data.example_inputs)
    choices = [LayerChoice(bits=b) for b in (2, 4, 8, 16)]
    sens = sensitivities(model, names, choices, data.calibration, "measured", batches=4, input_qparams=qp)
    options = layer_options(specs, choices, sens, None, None)
    loss8 = sum(sens[n][LayerChoice(bits=8)] for n in names)
    bytes8 = uniform_cost(options, LayerChoice(bits=8), "bytes")
    val8 = _acc(apply_policy(model, {n: LayerChoice(bits=8) for n in names}, input_qparams=qp), data.val)
    dual = allocate(options, {"loss": loss8, "bytes": bytes8}, minimize="bytes")
    for factor in (2.0**k for k in range(1, 12)):
        trial = allocate(options, {"loss": loss8 * factor, "bytes": bytes8}, minimize="bytes")
        if _acc(apply_policy(model, trial.policy, input_qparams=qp), data.val) < val8:
            break
        dual = trial
    mixed8 = _acc(apply_policy(model, dual.policy, input_qparams=qp), data.test)
    t = Table(
        "Digits CNN: mixed precision vs uniform (test accuracy, fake-quant W-bits/A8, simulated)",
        ["model", "weight bytes", "test acc %", "per-layer bits"],
    )
    t.add("fp32", sum(s.weight_count for s in specs) * 4, fp32, "fp32")
    t.add("uniform 4-bit", budget4, uniform[4], "all 4")
    t.add("mixed @ 4-bit bytes (MILP)", plan4.totals["bytes"], mixed4, _bits(plan4.policy))
    t.add("uniform 8-bit", bytes8, uniform[8], "all 8")
    t.add(
        "mixed, fewest bytes at uniform 8-bit's validation accuracy", dual.totals["bytes"], mixed8, _bits(dual.policy)
    )
    section.tables.append(t)
    section.targets.append(
        Target(
            5,
            "mixed precision @ uniform 4-bit bytes",
            "more accurate than uniform 4-bit",
            f"{mixed4:.2f}% vs {uniform[4]:.2f}% ({plan4.totals['bytes']:.0f} <= {budget4:.0f} B)",
            mixed4 > uniform[4] and plan4.totals["bytes"] <= budget4,
        )
    )
    smaller = dual.totals["bytes"] < bytes8
    section.targets.append(
        Target(
            5,
            "mixed precision @ uniform 8-bit budget",
            "smaller or faster at equal accuracy",
            f"{dual.totals['bytes']:.0f} vs {bytes8:.0f} B, {mixed8:.2f}% vs {uniform[8]:.2f}%",
            smaller and mixed8 >= uniform[8] - EQUAL,
        )
    )


def _mixed_kernels(section: Section, model, data) -> None:
    """Issue 17 item 6: the mixed-precision stage's W4/W8 model exported to ONNX, and the ONNX Runtime kernel of each
    layer read from the graph it runs."""
    mixed = apply(
        model,
        MixedPrecision(bits=(4, 8, 16), budget="bytes", budget_fraction=MIXED_KERNEL_FRACTION),
        Context(example_inputs=data.example_inputs, calibration=data.calibration, progress=False),
    )
    bits = {n: m.bits for n, m in mixed.named_modules() if isinstance(m, (LowBitConv, LowBitLinear))}
    kernels = to_onnxruntime(mixed, data.example_inputs).kernels
    t = Table(
        f"Digits CNN mixed precision (4 / 8 / 16 bits at {MIXED_KERNEL_FRACTION:.0%} of the fp32 weight bytes): "
        "the ONNX Runtime kernel of each layer",
        ["layer", "weight bits", "kernel (ONNX Runtime, after graph optimization)"],
    )
    for layer, kernel in kernels.items():
        t.add(layer, bits.get(layer, 32), kernel)
    t.note = (
        "Read from the graph ONNX Runtime runs (shrink.export.kernels): 2-8-bit layers are exported on the int8 grid "
        "(QDQ) and fused into integer kernels; 16-bit layers run float. The same table is in report.html of a "
        "recipe's onnx_export stage."
    )
    section.tables.append(t)
    low = [n for n, b in bits.items() if b <= 8]
    on_int8 = [n for n in low if kernels.get(n, "").endswith("(int8)")]
    section.targets.append(
        Target(
            17,
            "mixed W4/W8 digits CNN: every layer at <= 8 bits on an int8 ONNX Runtime kernel",
            "all of them",
            f"{len(on_int8)} of {len(low)} ({sorted(set(bits.values()))} bits in the mix)",
            bool(low) and len(on_int8) == len(low),
        )
    )


#: the byte budget of the kernel table's mixed model (of the fp32 weight bytes), between uniform 4- and 8-bit
MIXED_KERNEL_FRACTION = 0.19

#: the latency budget, fixed before the run: this fraction of the fp32 end-to-end latency timed in the same run
BUDGET_FRACTION = 0.85


def _latency_budget(section: Section, model, data, ctx, xb, calib, table) -> None:
    # the budget is a fixed fraction of fp32, given to the planner as that fraction (timed together with fp32, the
    # ratio holds when the machine's speed drifts); the allocator plans on the calibrated profile and the check
    # times fp32, all-int8 and the chosen model together
    tmp = Path(tempfile.mkdtemp(prefix="bench-lat-"))
    fp32_session = _ort(model, xb, calib, False, tmp, "fp32")
    int8_session_all = _ort(model, xb, calib, True, tmp, "int8")
    fp32_ms, int8_ms = interleaved_latency_ms([fp32_session, int8_session_all], xb)
    cfg = MixedPrecision(
        budget="latency", budget_fraction=BUDGET_FRACTION, bits=(4, 8, 16), profile="cpu", latency_model="calibrated"
    )
    plan_ctx = Context(example_inputs=xb, calibration=data.calibration, val=data.val, progress=False)
    t = Table(
        f"Latency budget on the measured CPU profile (ONNX Runtime, batch {BATCH}, 2 threads)",
        ["what", "ms"],
    )
    t.add("fp32 measured (before planning)", fp32_ms)
    t.add("all int8 measured (before planning, for information)", int8_ms)
    t.add(f"budget ({BUDGET_FRACTION} x fp32, fixed before the run)", BUDGET_FRACTION * fp32_ms)
    try:
        plan, planned_s = plan_mixed_precision(model, cfg, plan_ctx)
    except ConfigError as exc:
        t.note = f"no allocation: {exc}"
        section.tables.append(t)
        section.targets.append(latency_budget_target(math.nan, math.nan, str(exc)[:160]))
        return
    int8 = sorted(n for n, c in plan.policy.items() if c.bits <= 8)
    chosen = int8_session(model, tmp / "chosen", xb, calib, int8, threads=2)
    fp32_now, int8_now, measured = interleaved_latency_ms([fp32_session, int8_session_all, chosen], xb)
    raw = estimate(model, "cpu", xb, dict(plan.policy), table=table).latency_s * 1e3
    t.note = (
        f"chosen: {_bits(plan.policy)}. {' '.join(plan_ctx.notes)}. Timings: interleaved rounds normalized by each "
        "round's mean (shrink.eval.latency.interleaved_latency)."
    )
    t.add("chosen policy: per-layer table sum (uncalibrated)", raw)
    t.add("budget in ms as the planner set it (fraction x fp32 timed during its calibration)", planned_s * 1e3)
    t.add("chosen policy: predicted end to end (calibrated)", plan.totals["latency"] * 1e3)
    t.add("check, timed together: fp32", fp32_now)
    t.add("check, timed together: all int8", int8_now)
    t.add(f"check, timed together: budget ({BUDGET_FRACTION} x fp32)", BUDGET_FRACTION * fp32_now)
    t.add("check, timed together: chosen policy", measured)
    section.tables.append(t)
    section.targets.append(latency_budget_target(measured, fp32_now, f"all-int8 {int8_now:.3f} ms"))


def latency_budget_target(measured: float, fp32: float, detail: str) -> Target:
    """Met when the chosen policy, timed together with fp32, takes at most :data:`BUDGET_FRACTION` of fp32's time."""
    budget = BUDGET_FRACTION * fp32
    return Target(
        5,
        "latency budget on the CPU profile",
        f"≤ {BUDGET_FRACTION} x fp32 when measured",
        f"{measured:.3f} ms vs budget {budget:.3f} ms (fp32 {fp32:.3f} ms; {detail}; timed together)",
        measured <= budget,
    )


def _ort(model, xb, calib, int8: bool, tmp: Path, name: str) -> OnnxModel:
    from shrink.hw.ort_int8 import int8_session

    if int8:
        return int8_session(model, tmp / name, xb, calib, threads=2)
    return OnnxModel(export_onnx(model, tmp / name / "m.onnx", xb), threads=2)


def _channels(model, data, ratio: float):
    """A copy of ``model`` with ``ratio`` of its channels removed (no fine-tuning)."""
    return shrink.prune(model, ChannelPruning(ratio=ratio), example_inputs=data.example_inputs, progress=False)


def _shapes(model, xb) -> list[tuple[int, int]]:
    return [(s.in_channels, s.out_channels) for s in trace_layers(model, xb)]


def _search_vs_single(section: Section, model, data, ctx, xb, calib, table, quick: bool) -> None:
    # fairness: every technique that removes channels (single or searched) gets the same recovery budget, 2 epochs
    # of fine-tuning at lr 1e-3; int8 PTQ gets none (nor do the search's int8-only candidates); accuracy on the same
    # test split; all latencies timed together at the end, interleaved
    tmp = Path(tempfile.mkdtemp(prefix="bench-search-"))
    base = _acc(model, data.test)
    rows = []  # (name, technique kind, session)
    shapes = {}  # name -> (layer shapes, int8 layers) of the model that runs
    rows.append(("fp32", "baseline", _ort(model, xb, calib, False, tmp, "fp32")))
    rows.append(("int8 static PTQ (all layers)", "single", _ort(model, xb, calib, True, tmp, "int8")))
    for ratio in (0.25, 0.5, 0.75):
        pruned = _channels(model, data, ratio)
        torch.manual_seed(0)
        fit(pruned, data.train, epochs=2, lr=1e-3, progress=False)
        session = _ort(pruned, xb, calib, False, tmp, f"channels{ratio}")
        rows.append((f"channel pruning {ratio:.0%} + 2 ep fine-tune", "single", session))
        shapes[rows[-1][0]] = (_shapes(pruned, xb), ())
    mag = apply(model, MagnitudePruning(sparsity=0.5), Context(progress=False))
    torch.manual_seed(0)
    fit(mag, data.train, epochs=2, lr=1e-3, progress=False)
    rows.append(
        ("magnitude pruning 50% + 2 ep fine-tune (dense kernels)", "single", _ort(mag, xb, calib, False, tmp, "mag"))
    )

    cfg = CompressionSearch(
        profile="cpu",
        objective="latency",
        tolerance=TOLERANCE_POINTS,
        bits=(8, 32),
        widths=(1.0, 0.75, 0.5, 0.375, 0.25),
        candidates=10 if quick else 20,
        parallel=2,
        backend="local",
        finetune_epochs=2,
        lr=1e-3,
        cost_batch=BATCH,
        latency_model="calibrated",
    )
    result, chosen = run_search(model, cfg, ctx)
    best = result.point(result.best) if result.best else None
    if best is not None:
        real = compress(
            model,
            {n: LayerChoice(width=c["width"]) for n, c in best.policy.items()},
            example_inputs=data.example_inputs,
            calibration=calib,
            train=list(data.train),
            finetune_epochs=cfg.finetune_epochs,
            lr=cfg.lr,
        )
        int8_layers = sorted(n for n, c in best.policy.items() if c["bits"] <= 8)
        session = int8_session(real, tmp / "search", xb, calib, int8_layers, threads=2)
        rows.append((f"search ({best.label}, 1-pt tolerance)", "search", session))
        shapes[rows[-1][0]] = (_shapes(real, xb), tuple(int8_layers))
    latencies = interleaved_latency_ms([r[2] for r in rows], xb)
    measured = [(name, kind, _acc(sess, data.test), ms) for (name, kind, sess), ms in zip(rows, latencies, strict=True)]
    t = Table(
        f"Search vs single techniques (ONNX Runtime, batch {BATCH}, test accuracy of the real model)",
        ["model", "kind", "test acc %", "latency ms"],
        note="Latency: all models timed together in 15 interleaved rounds, normalized by each round's mean "
        "(shrink.eval.latency.interleaved_latency).",
    )
    for r in measured:
        t.add(*r)
    section.tables.append(t)
    pts = Table(
        "Search candidates, cheapest predicted first (end-to-end latency on the calibrated cpu profile; validation "
        "accuracy after the same 2-epoch fine-tuning as the single techniques, where measured)",
        ["point", "policy", "predicted ms", "predicted loss (KL)", "measured val acc %", "timed ms", "status"],
        note="timed ms: candidates within tolerance, built as the model that runs and timed together by the search "
        "(its answer is the fastest of them).",
    )
    front = {p.label for p in result.measured_front()}
    for p in result.points:
        status = "measured" + (", Pareto" if p.label in front else "") if p.measured else "predicted only"
        pts.add(
            p.label + (" (chosen)" if p.label == result.best else ""),
            p.summary(),
            p.predicted_cost * 1e3,
            p.predicted_loss,
            p.measured_metric if p.measured else "-",
            p.measured_cost * 1e3 if p.measured_cost is not None else "-",
            status,
        )
    section.tables.append(pts)
    section.images.append(save_png(result.pareto_png(), "search_pareto.png"))
    within = [r for r in measured if r[1] == "single" and base - r[2] <= TOLERANCE_POINTS]
    best_single = min(within, key=lambda r: r[3]) if within else None
    found = next((r for r in measured if r[1] == "search"), None)
    drop = base - found[2] if found is not None else 0.0  # the search's pick, points below fp32
    met = found is not None and best_single is not None and found[3] < best_single[3] and drop <= TOLERANCE_POINTS
    same = found is not None and best_single is not None and shapes.get(found[0]) == shapes.get(best_single[0])
    if same:  # the same layer shapes and precisions run the same kernels: any latency difference is timing noise
        met = False
    section.targets.append(
        Target(
            5,
            "search (1-point tolerance) vs best single technique",
            "faster on the CPU",
            f"{found[3]:.3f} ms ({found[2]:.2f}%) vs {best_single[0]} {best_single[3]:.3f} ms"
            + (
                " — the search chose the same layer shapes and precisions, so the difference is timing noise"
                if same
                else ""
            )
            + (f" — {drop:.2f} points below fp32, over the tolerance" if drop > TOLERANCE_POINTS else "")
            if found and best_single
            else "no result",
            met,
        )
    )
    _rank_check(section, model, data, xb, calib, table, result)


#: the widths of the thinner copies the cost model's calibration times besides the model (not widths of the checks:
#: the channel rows are at 0.75, 0.5 and 0.25, the search's widths 1.0, 0.75, 0.5, 0.375 and 0.25). Two, so that
#: the fit sees widths near the narrowest checked ones: with one copy at 0.6 its offset came out negative and it priced
#: the quarter-width models under zero. Chosen on the stress test's 24 random mixes, not on the checked configs
#: (2026-12-07, AMD EPYC, Spearman of the calibrated model: 0.913 with 0.6 alone, 0.983 with 0.6 and 0.3)
CALIBRATION_WIDTHS = (0.6, 0.3)


def _rank_check(section: Section, model, data, xb, calib, table, result) -> None:
    configs = [
        ("fp32", model, {}),
        ("int8 all", model, {n: LayerChoice(bits=8) for n in [s.name for s in trace_layers(model, xb)]}),
    ]
    for p in result.points:
        widths = {n: LayerChoice(width=c["width"]) for n, c in p.policy.items()}
        thin = compress(model, widths, example_inputs=data.example_inputs, calibration=calib)
        configs.append((p.label, thin, {n: LayerChoice(bits=c["bits"]) for n, c in p.policy.items()}))
    for width in (0.75, 0.5, 0.25):
        thin = _channels(model, data, 1 - width)
        configs.append((f"channels x{width}", thin, {}))
        configs.append(
            (
                f"channels x{width} int8",
                thin,
                {n: LayerChoice(bits=8) for n in [s.name for s in trace_layers(thin, xb)]},
            )
        )
    check = check_profile(configs, xb, calib, "cpu", table)
    profile = load_profile("cpu")
    # the fit also times the mixes of thinner copies, at widths none of the checked models has
    thinner = [_channels(model, data, 1 - w) for w in CALIBRATION_WIDTHS]
    cal = calibrate(model, xb, calib, profile, table, thinner=thinner)
    _random_mixes(section, model, data, xb, calib, table, cal)
    calibrated = [
        cal.predict_ms(policy_features(trace_layers(m, xb), dict(p), profile, table)) / 1e3 for _, m, p in configs
    ]
    cal_rank = rank_correlation(calibrated, check.measured_s)
    t = Table(
        f"CPU cost model vs measurement (batch {BATCH}) over {check.correlation.n} configs: Spearman "
        f"{cal_rank.spearman:.3f} calibrated end to end, {check.correlation.spearman:.3f} per-layer table sum",
        ["config", "predicted ms (layer table sum)", "predicted ms (calibrated)", "measured ms (end to end)"],
        note=(
            "calibration on the int8/fp32 mixes of the model and of copies pruned to "
            f"{' and '.join(f'{w:g}' for w in CALIBRATION_WIDTHS)} of its channels: {cal.describe()}"
        ),
    )
    for label, pr, pc, me in zip(check.labels, check.predicted_s, calibrated, check.measured_s, strict=True):
        t.add(label, pr * 1e3, pc * 1e3, me * 1e3)
    section.tables.append(t)
    section.targets.append(
        Target(
            5,
            "CPU cost model rank correlation",
            ">= 0.9 (Spearman)",
            f"{cal_rank.spearman:.3f} calibrated ({check.correlation.spearman:.3f} table sum) over "
            f"{check.correlation.n} configs",
            cal_rank.spearman >= 0.9,
        )
    )


def _random_mixes(section: Section, model, data, xb, calib, table, cal, n: int = 24) -> None:
    """Stress test of the cost model (reported, not a target): random per-layer widths and precisions, whose
    int8/fp32 boundaries fall anywhere, timed together interleaved."""
    rng = random.Random(0)
    names = [s.name for s in trace_layers(model, xb)]
    profile = load_profile("cpu")
    policies = []
    for _ in range(n):
        widths = {m: rng.choice((1.0, 0.75, 0.5, 0.25)) for m in names[:-1]}  # the classifier keeps its outputs
        policies.append({m: LayerChoice(width=widths.get(m, 1.0), bits=rng.choice((8, 32))) for m in names})
    configs = []
    for p in policies:
        widths = {m: LayerChoice(width=c.width) for m, c in p.items()}
        thin = compress(model, widths, example_inputs=data.example_inputs, calibration=calib)
        configs.append((thin, [m for m, c in p.items() if c.bits <= 8]))
    measured = interleaved_latency_ms(int8_sessions(configs, xb, calib), xb, threads=2)
    feats = [policy_features(trace_layers(model, xb), p, profile, table) for p in policies]
    summed = rank_correlation([f[0] for f in feats], measured)
    calibrated = rank_correlation([cal.predict_ms(f) for f in feats], measured)
    section.tables.append(
        Table(
            f"Cost model stress test: {n} random per-layer width x precision mixes (batch {BATCH})",
            ["predictor", "Spearman vs measured", "configs"],
            note="Not a target: the search and the allocator price near-homogeneous policies; here int8/fp32 "
            "boundaries fall anywhere and widths differ from layer to layer, and ONNX Runtime's rewrites around "
            "them (layout changes, unfused ops) depend on more than one boundary at a time.",
        )
    )
    section.tables[-1].add("per-layer table sum", f"{summed.spearman:.3f}", n)
    section.tables[-1].add("calibrated end to end", f"{calibrated.spearman:.3f}", n)


__all__ = ["TITLE", "run"]
