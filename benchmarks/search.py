"""Hardware-aware automation (issue 5): mixed precision on the digits CNN under byte and latency budgets, the
compression search with a 1-point tolerance against single techniques, and the CPU cost model against measurement.

Accuracies of fake-quant models are measured on the test split but simulated (fp32 kernels on quantized values);
every latency is measured end to end in ONNX Runtime (2 threads) on the model that really runs: int8 QDQ kernels for
layers at <= 8 bits, fp32 for the rest, removed channels physically gone. Search trials run in-process here (2 per
round); tests/search/test_search_ray.py checks that the same search on a local Ray instance measures the same points.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from benchmarks.common import Section, Table, Target, save_png
from shrink.api import Context, apply
from shrink.eval.latency import repeat_batch
from shrink.eval.metrics import accuracy, predict
from shrink.export.onnx import OnnxModel
from shrink.export.onnx import onnx as export_onnx
from shrink.hw import LatencyTable, LayerChoice, estimate, load_profile, trace_layers
from shrink.hw.validate import check_profile, measure_policy_latency
from shrink.prune.magnitude import MagnitudePruning
from shrink.prune.structured import ChannelPruning
from shrink.search.allocate import allocate
from shrink.search.apply import apply_policy, calibrate_inputs
from shrink.search.compress import compress
from shrink.search.mixed_precision import MixedPrecision, plan_mixed_precision
from shrink.search.options import layer_options, sensitivities, uniform_cost
from shrink.search.search import CompressionSearch, run_search
from shrink.search.trials import shutdown_ray
from shrink.train import fit
from shrink.zoo import digits_data, digits_teacher

TITLE = "Hardware-aware search and mixed precision"
BATCH = 32  # latency is priced and measured at this batch (the digits layers are overhead-bound at batch 1)
EQUAL = 100 / 360  # "equal accuracy": within one test image of 360


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
        profile = load_profile("cpu")
        table = LatencyTable(profile.measured)
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


def _latency_budget(section: Section, model, data, ctx, xb, calib, table) -> None:
    # the budget: 85% of the fp32 model's predicted layer time, plus what the layer table does not see (measured
    # fp32 latency minus its prediction, from the same measurement), so the budget is an end-to-end latency
    predicted_fp32 = estimate(model, "cpu", xb, {}, table=table).latency_s
    fp32_ms = measure_policy_latency(model, {}, xb, calib).median_ms
    over = fp32_ms / 1e3 - predicted_fp32
    cfg = MixedPrecision(budget="latency", budget_fraction=0.85, bits=(4, 8, 16), profile="cpu")
    plan, limit = plan_mixed_precision(
        model, cfg, Context(example_inputs=xb, calibration=data.calibration, val=data.val, progress=False)
    )
    budget_ms = (limit + over) * 1e3
    measured = measure_policy_latency(model, plan.policy, xb, calib).median_ms
    t = Table(
        f"Latency budget on the measured CPU profile (ONNX Runtime, batch {BATCH}, 2 threads)",
        ["what", "ms"],
        note=f"chosen: {_bits(plan.policy)}; table overhead (non-layer ops) {over * 1e3:.3f} "
        "ms measured in this run and added to the prediction",
    )
    t.add("fp32 measured", fp32_ms)
    t.add("budget (0.85 x fp32 layer time + non-layer time)", budget_ms)
    t.add("predicted for the chosen policy", plan.totals["latency"] * 1e3 + over * 1e3)
    t.add("measured for the chosen policy", measured)
    section.tables.append(t)
    section.targets.append(
        Target(
            5,
            "latency budget on the CPU profile",
            "met when measured",
            f"{measured:.3f} ms <= {budget_ms:.3f} ms",
            measured <= budget_ms,
        )
    )


def _ort(model, xb, calib, int8: bool, tmp: Path, name: str) -> OnnxModel:
    from shrink.hw.ort_int8 import int8_session

    if int8:
        return int8_session(model, tmp / name, xb, calib, threads=2)
    return OnnxModel(export_onnx(model, tmp / name / "m.onnx", xb), threads=2)


def _search_vs_single(section: Section, model, data, ctx, xb, calib, table, quick: bool) -> None:
    from shrink.eval.latency import measure_latency

    def timed(session) -> float:
        feeds = session.feeds(xb)
        return measure_latency(
            lambda: session.run_numpy(feeds), batch_size=BATCH, threads=2, reps=30, min_time_s=0.3
        ).median_ms

    tmp = Path(tempfile.mkdtemp(prefix="bench-search-"))
    base = _acc(model, data.test)
    rows = []  # (name, technique kind, test acc, latency ms)
    fp32 = _ort(model, xb, calib, False, tmp, "fp32")
    rows.append(("fp32", "baseline", _acc(fp32, data.test), timed(fp32)))
    int8 = _ort(model, xb, calib, True, tmp, "int8")
    rows.append(("int8 static PTQ (all layers)", "single", _acc(int8, data.test), timed(int8)))
    pruned = apply(model, ChannelPruning(ratio=0.5), Context(example_inputs=data.example_inputs, progress=False))
    fit(pruned, data.train, epochs=2, lr=1e-3, progress=False)
    chp = _ort(pruned, xb, calib, False, tmp, "channels")
    rows.append(("channel pruning 50% + 2 ep fine-tune", "single", _acc(chp, data.test), timed(chp)))
    mag = apply(model, MagnitudePruning(sparsity=0.5), Context(progress=False))
    magm = _ort(mag, xb, calib, False, tmp, "magnitude")
    rows.append(("magnitude pruning 50% (dense kernels)", "single", _acc(magm, data.test), timed(magm)))

    cfg = CompressionSearch(
        profile="cpu",
        objective="latency",
        tolerance=1.0,
        bits=(8, 32),
        widths=(1.0, 0.75, 0.5, 0.25),
        candidates=10 if quick else 20,
        parallel=2,
        backend="local",
        finetune_epochs=2,
        cost_batch=BATCH,
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
        )
        int8_layers = {n: LayerChoice(bits=c["bits"]) for n, c in best.policy.items() if c["bits"] <= 8}
        from shrink.hw.ort_int8 import int8_session

        session = int8_session(real, tmp / "search", xb, calib, sorted(int8_layers), threads=2)
        rows.append((f"search ({best.label}, 1-pt tolerance)", "search", _acc(session, data.test), timed(session)))
    t = Table(
        f"Search vs single techniques (ONNX Runtime, batch {BATCH}, test accuracy of the real model)",
        ["model", "kind", "test acc %", "latency ms"],
    )
    for r in rows:
        t.add(*r)
    section.tables.append(t)
    pts = Table(
        "Search candidates (predicted latency on the cpu profile; validation accuracy where measured)",
        ["point", "policy", "predicted ms", "predicted loss (KL)", "measured val acc %", "status"],
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
            status,
        )
    section.tables.append(pts)
    section.images.append(save_png(result.pareto_png(), "search_pareto.png"))
    within = [r for r in rows if r[1] == "single" and base - r[2] <= 1.0]
    best_single = min(within, key=lambda r: r[3]) if within else None
    found = next((r for r in rows if r[1] == "search"), None)
    met = found is not None and best_single is not None and found[3] < best_single[3] and base - found[2] <= 1.0
    section.targets.append(
        Target(
            5,
            "search (1-point tolerance) vs best single technique",
            "faster on the CPU",
            f"{found[3]:.3f} ms ({found[2]:.2f}%) vs {best_single[0]} {best_single[3]:.3f} ms"
            if found and best_single
            else "no result",
            met,
        )
    )
    _rank_check(section, model, data, xb, calib, table, result)


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
        thin = apply(
            model, ChannelPruning(ratio=1 - width), Context(example_inputs=data.example_inputs, progress=False)
        )
        configs.append((f"channels x{width}", thin, {}))
        configs.append(
            (
                f"channels x{width} int8",
                thin,
                {n: LayerChoice(bits=8) for n in [s.name for s in trace_layers(thin, xb)]},
            )
        )
    check = check_profile(configs, xb, calib, "cpu", table)
    t = Table(
        f"CPU cost model vs measurement (batch {BATCH}): Spearman {check.correlation.spearman:.3f} over "
        f"{check.correlation.n} configs",
        ["config", "predicted ms (layer table)", "measured ms (end to end)"],
    )
    for label, pr, me in zip(check.labels, check.predicted_s, check.measured_s, strict=True):
        t.add(label, pr * 1e3, me * 1e3)
    section.tables.append(t)
    section.targets.append(
        Target(
            5,
            "CPU cost model rank correlation",
            ">= 0.9 (Spearman)",
            f"{check.correlation.spearman:.3f} over {check.correlation.n} configs",
            check.correlation.spearman >= 0.9,
        )
    )


__all__ = ["TITLE", "run"]
