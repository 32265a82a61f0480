"""Section: int4 weights on all-MiniLM-L6-v2 — shrink's weight-only int4 (round to nearest, GPTQ, AWQ + GPTQ, and the
encoder-int4 preset's AWQ + SignRound on asymmetric groups, and the same on symmetric ones) exported to ONNX Runtime's
int4 kernels (the preset's model also on PyTorch's, compiled and packaged), next to ONNX Runtime's own int4 quantizer
and torchao's int4 (NNCF's and INC's int4 rows are in the peers section), with the float baselines of the same run.

Every row is scored on the evaluation split (fidelity to the fp32 embeddings) and timed together at batch 1 and 32;
sizes are the files each row runs from, read from disk.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

import shrink
from benchmarks.baselines import (
    EAGER,
    FLOAT_ROWS,
    ORT,
    as_precision,
    compiled_row,
    float_baselines,
    ms_cell,
    native_bf16,
    packaged_row,
    sdpa_copy,
    speedup,
    time_together,
)
from benchmarks.common import Built, Fact, Section, Table, Target, minilm_calibration
from benchmarks.quant_minilm import Env, _fp32_path, _peer, _quantize
from shrink import presets
from shrink.config import Config
from shrink.data import call_model
from shrink.eval.metrics import embedding_fidelity, predict
from shrink.export.artifact import artifact_bytes
from shrink.export.onnx import OnnxModel
from shrink.presets import ENCODER_LINEARS
from shrink.quant import (
    AWQ,
    GPTQ,
    INTEGER_OPS,
    SignRound,
    WeightOnly,
    ort_optimized_ops,
    to_torch_kernels,
    to_torch_weight_only,
)
from shrink.select import Selector, select_modules

__all__ = ["TITLE", "run", "targets"]

TITLE = (
    "int4 weights: all-MiniLM-L6-v2 on ONNX Runtime's and PyTorch's int4 kernels, next to the int4 of ONNX Runtime "
    "and peers"
)

#: the layers every int4 row quantizes: the encoder's Linears (the pooler is not part of the sentence embedding)
LINEARS = ENCODER_LINEARS
#: the same plus the embedding tables, for the smallest file
LINEARS_AND_TABLES = Selector(types=("Linear", "Embedding"), ignore=ENCODER_LINEARS.ignore)
#: the rounding of the encoder-int4 preset (on asymmetric groups: a zero point each), which the fidelity and speed
#: targets read
METHOD = "AWQ+SignRound asymmetric"
BEST = f"shrink int4 g128 {METHOD}"
RTN = "shrink int4 g128 round-to-nearest"
RTN_ASYMMETRIC = f"{RTN}, asymmetric"
#: the BEST model on PyTorch's int4 kernels (Inductor's AMX int4 GEMM template where the CPU has AMX), compiled
#: in-process, and the same compiled ahead of time into an AOTInductor package
BEST_COMPILED = f"{BEST}: PyTorch int4 kernels, compiled"
BEST_PACKAGE = f"{BEST}: PyTorch int4 kernels, AOTInductor package"
#: the BEST model with its codes widened to int8 in memory (one scale per row) on oneDNN's int8 GEMMs, inputs
#: quantized per token (``shrink.quant.widen_to_int8``): the shrink file stays int4, compiled in-process; and the
#: same compiled ahead of time (the package holds the widened int8 weights)
BEST_WIDENED = f"{BEST}: widened to int8 GEMMs, compiled"
BEST_WIDENED_PACKAGE = f"{BEST}: widened to int8 GEMMs, AOTInductor package"
#: the rows of the BEST model; the int4 speed targets read the fastest of them
BEST_ROWS = (BEST, BEST_COMPILED, BEST_PACKAGE, BEST_WIDENED, BEST_WIDENED_PACKAGE)
#: not a model: the float package (bf16 where native, SDPA attention) with the GEMM of every Linear the int4 rows
#: quantize taken out. Its time is what any int4 scheme of those Linears could reach on this execution path
#: (the same package, the same non-GEMM code) with GEMMs that cost nothing: an estimated ceiling of its speed-up in
#: this run (another runtime's non-GEMM code may be faster or slower; no kernel reaches it exactly, as the weight
#: reads and the fusion barriers go with the GEMMs).
BOUND = "bound: float package with the quantized Linears' GEMMs taken out"


class ElidedLinear(nn.Module):
    """A Linear's output shape and bias without its GEMM: the input cut or tiled to the output width, plus the
    bias, a copy Inductor fuses into the neighbouring element-wise code. For :data:`BOUND` only."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.out_features = linear.out_features
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tiles = -(-self.out_features // x.shape[-1])
        y = (x.repeat(*[1] * (x.dim() - 1), tiles) if tiles > 1 else x)[..., : self.out_features]
        return y if self.bias is None else y + self.bias


def _preset(
    group: int, onnx_compute: str = "int8", tables: bool = False, asymmetric: bool | None = None
) -> list[Config]:
    """The shipped preset encoder-int4 (AWQ input scaling, SignRound codes, packed int4 storage) at another group
    size, ONNX arithmetic, stored selector or symmetry (None: the preset's); the defaults give the preset itself."""
    awq, rounding, stored = presets.get("encoder-int4")
    grid: dict[str, object] = {"group_size": group, **({} if asymmetric is None else {"asymmetric": asymmetric})}
    storage = {**grid, "onnx_compute": onnx_compute, **({"selector": LINEARS_AND_TABLES} if tables else {})}
    return [awq.model_copy(update=grid), rounding.model_copy(update=grid), stored.model_copy(update=storage)]


_G128 = {"bits": 4, "group_size": 128, "selector": LINEARS}
SHRINK: dict[str, list[Config]] = {
    RTN: [WeightOnly(**_G128)],  # type: ignore[arg-type]
    RTN_ASYMMETRIC: [WeightOnly(**_G128, asymmetric=True)],  # type: ignore[arg-type]
    "shrink int4 g128 GPTQ": [GPTQ(**_G128), WeightOnly(**_G128)],  # type: ignore[arg-type]
    "shrink int4 g128 AWQ+GPTQ": [AWQ(**_G128), GPTQ(**_G128), WeightOnly(**_G128)],  # type: ignore[arg-type]
    BEST: presets.get("encoder-int4"),  # the shipped preset (group 128)
    "shrink int4 g128 AWQ+SignRound symmetric": _preset(128, asymmetric=False),
    f"shrink int4 g32 {METHOD}": _preset(32),
    f"{BEST}, float arithmetic": _preset(128, onnx_compute="float"),
    f"{BEST} + int4 tables": _preset(128, tables=True),
}
#: peer int4 rows: ONNX Runtime's quantizer (built here) and the peers of benchmarks.peers
ORT_BLOCKS = (128, 32)
#: (NNCF's and INC's int4 weight-only rows are in the peers section's table)
PEER_INT4 = (
    "torchao int4 weight-only g32",
    "torchao int4 weight-only g32 + torch.compile",
    "torchao int4 weights, int8 dynamic act g32 + torch.compile",
)
QUICK_PEERS = ("torchao int4 weight-only g32",)
#: ops that show a row runs low-bit arithmetic in ONNX Runtime
LOW_BIT_OPS = INTEGER_OPS | {"GatherBlockQuantized"}
COLUMNS = [
    "method",
    "execution",
    "cos mean",
    "cos min",
    "NN agree % [95% CI]",
    "file MiB (read from disk)",
    "b1 ms",
    "b1 x best float",
    "b32 ms",
    "b32 x best float",
    "quantize s",
]
#: targets fixed before the run (issue 17)
MIN_COS, MIN_NN, MIN_X_B1, MIN_X_B32 = 0.99, 95.0, 1.5, 1.0


def _ort_row(path: Path, seconds: float, label: str) -> Built:
    ops = sorted(set(ort_optimized_ops(path)) & LOW_BIT_OPS)
    session = OnnxModel(path, threads=2)
    return Built(session, os.path.getsize(path), seconds, f"{label}; ORT ops: {', '.join(ops) or 'none low-bit'}")


#: the preparing stages of the rows, one list per distinct content (keyed by its JSON), so that the rows that
#: only store the same prepared model differently run those stages once
_PREPARATIONS: dict[str, list[Config]] = {}


def _stored(env: Env, recipe: list[Config]) -> tuple[nn.Module, float]:
    """``recipe``'s model (it ends in its storage stage) and the seconds of all its stages, the preparing stages
    shared with every row that runs the same ones."""
    *preparing, stored = recipe
    if not preparing or id(recipe) in env.quantized:
        return _quantize(env, recipe)
    key = "|".join(c.model_dump_json() for c in preparing)
    prepared, seconds = _quantize(env, _PREPARATIONS.setdefault(key, preparing))
    t = time.perf_counter()
    q = shrink.quantize(prepared, [stored], calibration=env.data.calibration)
    env.quantized[id(recipe)] = q, seconds + time.perf_counter() - t
    return env.quantized[id(recipe)]


def _shrink(recipe: list[Config]) -> Callable[[Env], Built]:
    stored = recipe[-1]
    assert isinstance(stored, WeightOnly)  # every row ends in the packed storage stage

    def build(env: Env) -> Built:
        q, seconds = _stored(env, recipe)
        path = env.tmp / f"shrink-{id(recipe)}.onnx"
        shrink.export.onnx(q, path, env.data.example_inputs)
        built = _ort_row(path, seconds, f"ONNX Runtime, {stored.onnx_compute} arithmetic")
        built.execution += f"; shrink.save file {artifact_bytes(q) / 2**20:.1f} MiB"
        return built

    return build


def _int4_kernels(q: nn.Module, env: Env) -> nn.Module:
    """The model's Linears on PyTorch's int4 kernels (bf16 activations)."""
    real, _, left = to_torch_weight_only(q)
    if left:
        raise RuntimeError(f"{left} Linears have no int4 kernel for their grid")
    return real


def _widened_kernels(q: nn.Module, env: Env) -> nn.Module:
    """The model's codes widened to int8 on oneDNN's int8 GEMMs (per-token int8 inputs)."""
    return to_torch_kernels(q, env.data.example_inputs, widen_int8=True)[0]


def _on_torch(
    recipe: list[Config], convert: Callable[[nn.Module, Env], nn.Module], packaged: bool
) -> Callable[[Env], Built]:
    """``recipe``'s model converted onto PyTorch's kernels by ``convert``, compiled in-process or ahead of time into
    a package; size: the shrink file the compiled row loads from, or the package file (its weights as converted)."""

    def build(env: Env) -> Built:
        q, seconds = _stored(env, recipe)
        real = convert(q, env)
        x1, x32 = env.data.example_inputs, env.data.test[0]
        if packaged:
            label = f"{real.shrink_execution}, AOTInductor package (compiled ahead of time)"
            path = env.tmp / f"shrink-{convert.__name__}.pt2"
            return replace(packaged_row(real, x32, path, label), seconds=seconds)
        return replace(compiled_row(real, [x32, x1], size_bytes=artifact_bytes(q)), seconds=seconds)

    return build


def _bound(env: Env) -> Built:
    model = sdpa_copy(env.model) or env.model
    bf16 = native_bf16()
    model = as_precision(model, bf16)  # a copy: env.model keeps its Linears
    for name, linear in select_modules(model, LINEARS).items():
        model.set_submodule(name, ElidedLinear(linear))
    label = (
        f"{'bf16' if bf16 else 'fp32'} AOTInductor package (the float rows' settings), SDPA attention; no GEMM in "
        "the Linears the int4 rows quantize"
    )
    return packaged_row(model, env.data.test[0], env.tmp / "bound.pt2", label)


def _ort_nbits(block: int) -> Callable[[Env], Built]:
    def build(env: Env) -> Built:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            MatMulNBitsQuantizer,
        )

        logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
        out = env.tmp / f"ort-nbits-{block}.onnx"
        t = time.perf_counter()
        config = DefaultWeightOnlyQuantConfig(block_size=block, accuracy_level=4)
        quantizer = MatMulNBitsQuantizer(onnx.load(str(_fp32_path(env))), algo_config=config)
        quantizer.process()
        quantizer.model.save_model_to_file(str(out), False)
        label = (
            f"onnxruntime MatMulNBitsQuantizer defaults (round to nearest, asymmetric: zero points), block {block}, "
            "accuracy_level 4 (int8 arithmetic)"
        )
        return _ort_row(out, time.perf_counter() - t, label)

    return build


def _builders(quick: bool) -> dict[str, Callable[[Env], Built]]:
    names = [RTN, BEST] if quick else list(SHRINK)
    out: dict[str, Callable[[Env], Built]] = {n: _shrink(SHRINK[n]) for n in names}
    out[BEST_COMPILED] = _on_torch(SHRINK[BEST], _int4_kernels, packaged=False)
    out[BEST_WIDENED] = _on_torch(SHRINK[BEST], _widened_kernels, packaged=False)
    if not quick:
        out[BEST_PACKAGE] = _on_torch(SHRINK[BEST], _int4_kernels, packaged=True)
        out[BEST_WIDENED_PACKAGE] = _on_torch(SHRINK[BEST], _widened_kernels, packaged=True)
        out[BOUND] = _bound
    out.update({f"ORT MatMulNBits g{b}": _ort_nbits(b) for b in (ORT_BLOCKS[:1] if quick else ORT_BLOCKS)})
    out.update({n: _peer(n) for n in (QUICK_PEERS if quick else PEER_INT4)})
    return out


def _build(env: Env, quick: bool) -> tuple[dict[str, Built], dict[str, str]]:
    failed: dict[str, str] = {}
    warm = [env.data.test[0], env.data.example_inputs]  # the float package is built from the first: batch 32
    built = float_baselines(env.model, env.data.example_inputs, warm, _fp32_path(env), failures=failed, aot=not quick)
    for name, make in _builders(quick).items():
        print(f"  building {name}", flush=True)
        try:
            built[name] = make(env)
        except Exception as exc:  # a failing row is a result to report
            failed[name] = f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return built, failed


def run(quick: bool) -> Section:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from shrink.zoo.minilm import load_minilm, minilm_data

    torch.manual_seed(0)
    env = Env(load_minilm(), minilm_data(), Path(tempfile.mkdtemp(prefix="quant-int4-")))
    ref, _ = predict(lambda x: call_model(env.model, x), env.data.test)
    built, failed = _build(env, quick)
    fidelity = {n: embedding_fidelity(ref, predict(b.run, env.data.test)[0]) for n, b in built.items() if n != BOUND}
    batches = {1: env.data.example_inputs, 32: env.data.test[0]}
    lat = time_together({n: b.run for n, b in built.items()}, batches, rounds=5 if quick else 15)
    table = Table("all-MiniLM-L6-v2 int4, evaluation split: fidelity to fp32, file size, latency (2 threads)", COLUMNS)
    for name, b in built.items():
        f = fidelity.get(name)  # none for the bound, which computes another function
        ci = f"{f['nn_agreement']:.1f} [{f['nn_agreement_low']:.1f}–{f['nn_agreement_high']:.1f}]" if f else "-"
        scores = [f["cos_mean"], f["cos_min"], ci] if f else ["-", "-", ci]
        timing = [c for bs in (1, 32) for c in (ms_cell(lat[name][bs]), f"{speedup(lat, name, bs):.2f}x")]
        seconds = f"{b.seconds:.1f}" if name not in FLOAT_ROWS and name != BOUND else "-"
        table.add(name, b.execution, *scores, b.size_bytes / 2**20, *timing, seconds)
    for name, error in failed.items():
        table.add(name, error, *["-"] * (len(COLUMNS) - 2))
    table.note = _note(env)
    medians = {n: {bs: st.median_ms for bs, st in per.items()} for n, per in lat.items()}
    sizes = {n: b.size_bytes for n, b in built.items()}
    return Section(TITLE, intro=_intro(), tables=[table], targets=targets(fidelity, medians), facts=_facts(sizes))


def _steps() -> int:
    """The signed-gradient steps per block of the preset's SignRound stage."""
    return next(c.steps for c in SHRINK[BEST] if isinstance(c, SignRound))


def _note(env: Env) -> str:
    n_test = sum(len(t["input_ids"]) for t in env.data.test)
    return (
        f"Scored on the evaluation split ({n_test} sentences); GPTQ's Hessians, AWQ's scale search and the block "
        f"outputs SignRound learns to match read only the calibration split ({minilm_calibration(env.data)}). {METHOD} "
        "is the encoder-int4 preset: AWQ's input scaling, then SignRound's rounding and clipping (of each group's "
        f"maximum and minimum) learned block by block ({_steps()} signed-gradient steps per encoder layer, towards "
        "the float layer's output), on asymmetric groups (the preset's choice, made on the calibration split). "
        "shrink's rows quantize the encoder's 36 Linears (the last row also the embedding tables, on symmetric groups) "
        "with int4 codes and one fp16 scale per group, plus a zero point per group where the row says asymmetric, "
        "and run in ONNX Runtime: Linears as MatMulNBits (int8 arithmetic, each input block quantized to int8 at run "
        "time, except the row that says float arithmetic), tables as GatherBlockQuantized; "
        "the two 'PyTorch int4 kernels' rows run the preset's model's Linears on aten._weight_int4pack_mm_for_cpu "
        "(bf16 activations), which Inductor (GEMM autotuning) may replace by its AMX int4 GEMM template, compiled "
        "in-process or ahead of time as an AOTInductor package (its file size includes the kernels); the two 'widened "
        "to int8 GEMMs' rows load the same model with its codes widened to int8 in memory (one scale per row instead "
        "of per group) and run its Linears on oneDNN's int8 GEMMs with each token's input quantized to uint8 (W8A8 "
        "arithmetic on int4 weights; the compiled row's file is the int4 shrink file, the package holds the widened "
        "int8 weights); the int4 speed targets read the fastest of the five executions of that model. The bound row "
        "is not a model: it is the float package with SDPA attention and the GEMM of each of the 36 Linears taken out "
        "(its input cut or tiled to the output width, plus the bias), so its 'x best float' estimates the most any "
        "int4 scheme of those Linears could gain on this execution path in this run, whatever its GEMM kernels; it "
        "has no fidelity. ONNX Runtime's quantizer rewrites the fp32 graph's MatMuls with its defaults. torchao rows "
        "run in PyTorch as torchao ships them (compiled where the row says so). 'file MiB' is the file each row runs "
        "from (ONNX, or the peer's saved state). All rows timed together in interleaved rounds; 'x best float' "
        "divides the fastest float row of this run (SDPA-attention twins of the float rows included) by the row's "
        "time. ⚠ unstable marks a row whose slowest round took over 1.5x its fastest."
    )


def _intro() -> str:
    return (
        "Weight-only int4 stores each weight in half a byte: the question is whether it also runs faster than the "
        "fastest float execution of the same model and how much fidelity it keeps. AWQ + SignRound on asymmetric "
        "groups is shrink's calibrated rounding (the encoder-int4 preset); the same on symmetric groups, AWQ + GPTQ "
        "and GPTQ alone are the roundings it replaced, round-to-nearest (either grid) the ablation."
    )


_NAN_F = {"cos_mean": math.nan, "nn_agreement": math.nan}


def targets(fidelity: dict[str, dict[str, float]], lat: dict[str, dict[int, float]]) -> list[Target]:
    """The issue-17 int4 targets read off one run: ``fidelity`` name -> embedding fidelity, ``lat`` name -> batch
    size -> median ms (every row timed together)."""
    best = fidelity.get(BEST, _NAN_F)
    out = [
        Target(
            17,
            f"MiniLM int4 g128 ({METHOD}): mean cosine to fp32",
            f"≥ {MIN_COS}",
            f"{best['cos_mean']:.4f}",
            best["cos_mean"] >= MIN_COS,
        ),
        Target(
            17,
            f"MiniLM int4 g128 ({METHOD}): nearest-neighbour agreement",
            f"≥ {MIN_NN:.0f}%",
            f"{best['nn_agreement']:.1f}%",
            best["nn_agreement"] >= MIN_NN,
        ),
    ]
    rtn = (RTN, RTN_ASYMMETRIC)
    others = {n: f for n, f in fidelity.items() if n in rtn or n.startswith("ORT MatMulNBits") or n in PEER_INT4}
    what = f"MiniLM int4 g128 {METHOD} beats round-to-nearest and every peer int4 row ({len(others)})"
    if not others:
        out.append(Target(17, what, "higher cos and NN than each", "no round-to-nearest or peer int4 row ran", None))
    else:
        by_cos = max(others, key=lambda n: others[n]["cos_mean"])
        by_nn = max(others, key=lambda n: others[n]["nn_agreement"])
        measured = (
            f"cos {best['cos_mean']:.4f} vs the highest other, {by_cos}: {others[by_cos]['cos_mean']:.4f}; "
            f"NN {best['nn_agreement']:.1f}% vs the highest other, {by_nn}: {others[by_nn]['nn_agreement']:.1f}%"
        )
        beats = all(
            best["cos_mean"] > f["cos_mean"] and best["nn_agreement"] > f["nn_agreement"] for f in others.values()
        )
        out.append(Target(17, what, "higher cos and NN than each", measured, beats))
    for b, goal in ((1, MIN_X_B1), (32, MIN_X_B32)):
        ours = [(lat[n][b], n) for n in BEST_ROWS if b in lat.get(n, {})]
        ms, row = min(ours) if ours else (math.nan, BEST)
        timed = [(lat[n][b], n) for n in FLOAT_ROWS if b in lat.get(n, {})]
        fastest, name = min(timed) if timed else (math.nan, "no float row")
        x = fastest / ms
        bound = f"; {BOUND}: {fastest / lat[BOUND][b]:.2f}x" if b in lat.get(BOUND, {}) else ""
        out.append(
            Target(
                17,
                f"MiniLM int4 g128 ({METHOD}) b{b}, fastest of its executions, vs the fastest float baseline",
                f"≥ {goal}x",
                f"{x:.2f}x ({row} {ms:.2f} ms vs {name} {fastest:.2f} ms{bound})",
                x >= goal,
            )
        )
    return out


def _facts(sizes: dict[str, int]) -> list[Fact]:
    fp32 = sizes.get(ORT) or sizes.get(EAGER)
    return [
        Fact(17, f"{name}: file size vs fp32", f"{size / 2**20:.1f} MiB ({size / fp32:.1%} of fp32)")
        for name, size in sizes.items()
        if fp32 and name in SHRINK
    ]
