"""`make bench-llm`: SmolLM2-135M-Instruct (real weights) compressed end to end, judged by perplexity and speed.

Every row is measured in this run on the same evaluation windows and prompts: perplexity on the evaluation split
(512-token windows), greedy-token agreement with fp32 (first 32 tokens of each fixed prompt), weight bytes in memory,
KV-cache bytes at 512 tokens, size on disk, the memory scoring adds. Then, with every variant built and kept, the
speeds are timed interleaved (round after round over all rows, the first round discarded): prefill latency (512
tokens, batch 1, into a fresh KV cache, the last position's logits alone, as ``generate`` runs it) and decode
tokens/s (batch 1, after a 64-token prompt). Three int4
settings, the rotation folded into the weights (:func:`shrink.llm.rotate.rotate_llama`), the search for clipped group
scales (``clip`` of :func:`shrink.llm.weight_only.quantize_weight_only`) and then zero points for the int4 groups
(``asymmetric``), are chosen for the run before any row is built, on the calibration windows alone. Every int4 row
that reads layer inputs (GPTQ, clipped scales) reads them block by block, on the model whose earlier blocks are
already int4 (``sequential``). Writes docs/benchmarks-llm.md (nothing typed by hand).

    python -m benchmarks.llm --out docs/benchmarks-llm.md [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import functools
import gc
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from benchmarks.common import THREADS, Table, Target
from benchmarks.run import run_facts
from shrink.eval.harness import cpu_features
from shrink.eval.language import (
    PROMPTS,
    decode_step_times,
    file_size,
    greedy_tokens,
    matching_prefix,
    peak_rss,
    perplexity,
    prefill_latency,
    token_agreement,
)
from shrink.llm.kv_cache import Int8KVCache, cache_bytes
from shrink.llm.kv_kernel import kv_kernel_error
from shrink.llm.onnx import OrtCache, OrtDecoder, export_decoder
from shrink.llm.prune import prune_llama, recover
from shrink.llm.rotate import Rotation, rotate_llama
from shrink.llm.w8a8 import quantize_w8a8
from shrink.llm.weight_only import held_out_choice, quantize_weight_only
from shrink.quant import CompiledInt8, compile_int8
from shrink.zoo.llm import llm_texts, load_smollm2, token_windows

TITLE = "A real LLM: SmolLM2-135M-Instruct (GGUF Q4_1 origin, de-quantized to fp32)"
CONTEXT = 512
#: int4 grid judged: symmetric, one scale per 64 inputs. The model's weights were stored as Q4_1 (asymmetric, scale
#: and minimum per 32 weights), so an asymmetric group-32 grid would be lossless by construction; 128 does not
#: divide the hidden size (576), so 64 is the coarsest kernel-supported group that fits every layer.
INT4_GROUP = 64
#: structured pruning: share of MLP channels and of query heads removed per layer (SmolLM2: 3 query heads per
#: key/value head, so whole heads give 1 of 3 per group), then this many recovery steps at this learning rate
PRUNE_RATIO = 0.25
RECOVERY_STEPS = {False: 16, True: 4}
RECOVERY_LR = 1e-4
#: what every compiled row (float, shrink, peer) runs under: shrink.quant.compile_int8 without GEMM autotuning
#: (timing every GEMM candidate of a 30-layer decoder costs minutes per row on 2 cores)
COMPILED = "torch.compile (Inductor, frozen weights, dynamic shapes, no GEMM autotuning)"
#: how shrink's headline int4 rows choose their codes: GPTQ (block-sequential). Its layers read their input as it is;
#: AWQ's give each layer its own input factors, one more multiply per layer at run time (AWQ rows stay in the table).
#: Fixed before the run of 86a74a4 (earlier runs had scored AWQ + GPTQ and GPTQ alike), not chosen on its results
INT4_METHOD = "gptq"
#: every variant stays compiled side by side (they are timed interleaved at the end), so Dynamo may hold this many
#: graphs per function instead of falling back to eager after its default 8
RECOMPILE_LIMIT = 64
#: windows of CONTEXT tokens scored, and windows that calibrate (each set evenly spread over its documents, prose
#: and code: shrink.zoo.llm.token_windows)
EVALUATION_WINDOWS = {False: 8, True: 3}
CALIBRATION_WINDOWS = {False: 16, True: 4}
#: timing rounds over all variants (the first is a warm-up and is discarded) and decoding steps timed per round
ROUNDS = {False: 6, True: 3}
DECODE_STEPS = {False: 32, True: 16}
#: what the ONNX Runtime weight-only rows run on (shrink's export and ONNX Runtime's own quantizer alike)
ORT_NBITS = "ONNX Runtime MatMulNBits ({bits}-bit weights, int8 compute: accuracy_level 4; optimized graph)"


@dataclass
class Variant:
    name: str
    model: Any  # an nn.Module, an OrtDecoder (ONNX Runtime rows), or None (a peer that failed)
    execution: str
    build_s: float
    cache: Callable[[], Any] | None = None
    compile_s: float | None = None  # compiled rows: seconds to compile the prefill and decoding graphs
    error: str = ""  # a peer that failed: why (the row says so instead of measuring)
    #: a row whose speed is not timed (it runs the int4 kernel or the pruned shapes of the row named here, give or
    #: take AWQ's input scaling; it is released after its quality is measured, so the timing phase holds less memory)
    same_speed_as: str = ""


@dataclass
class Row:
    name: str
    values: dict[str, Any] = field(default_factory=dict)


def _tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds; a tensor subclass (torchao's quantized weights) counts the tensors it is made of."""
    flatten = getattr(t, "__tensor_flatten__", None)
    if flatten is not None and type(t) not in (torch.Tensor, nn.Parameter):
        names, _ = flatten()
        return sum(_tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def _weight_bytes(model: nn.Module) -> int:
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        try:
            key = t.data_ptr()
        except RuntimeError:  # an opaque prepacked oneDNN weight or a tensor subclass: counted by its parts
            key = id(t)
        if key not in seen:
            seen.add(key)
            total += _tensor_bytes(t)
    return total


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def native_bf16() -> str | None:
    """The CPU feature that runs bf16 natively (AMX, else AVX-512 BF16), or None."""
    return next((k for k in ("amx_bf16", "avx512_bf16") if cpu_features().get(k)), None)


def _float_parts() -> tuple[torch.dtype, str]:
    """What runs in float around the integer kernels of the W8A8 row and of torchao's rows: bf16 on a CPU with
    native bf16 (as the fastest float rows, and as torchao's documentation runs its models), else float32."""
    native = native_bf16()
    return (torch.bfloat16, f"bf16 elsewhere (native {native})") if native else (torch.float32, "fp32 elsewhere")


@torch.inference_mode()
def _warm(model: Any, vocab: int) -> None:
    """One call of each kind :func:`measure` makes: a prefill into a fresh cache, then two decoding steps (the
    first reads the keys and values as the prefill left them, strided; later ones read them concatenated, and
    Dynamo compiles a graph for each layout), each computing the last position's logits alone, as generation does
    (:func:`shrink.eval.language.prefill_latency`)."""
    ids = torch.randint(0, vocab, (1, CONTEXT), generator=torch.Generator().manual_seed(1))
    res = model(input_ids=ids, past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1)
    for _ in range(2):
        nxt = res.logits[:, -1].argmax(-1, keepdim=True)
        res = model(input_ids=nxt, past_key_values=res.past_key_values, use_cache=True, logits_to_keep=1)


def _compiled(model: nn.Module, vocab: int) -> tuple[nn.Module, float, str]:
    """``model`` through :func:`shrink.quant.compile_int8` (Inductor, frozen weights, dynamic shapes, see
    :data:`COMPILED`) -- the same for float, shrink and peer rows -- with every graph compiled before the clock,
    and what Dynamo did: graphs compiled and graph breaks (no graph at all would mean it ran eager)."""
    from torch._dynamo.utils import counters

    graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    compiled = compile_int8(model, max_autotune=False)
    _, seconds = _timed(lambda: _warm(compiled, vocab))
    graphs = counters["stats"]["unique_graphs"] - graphs
    breaks = sum(counters["graph_break"].values()) - breaks
    if graphs == 0:
        raise RuntimeError("torch.compile compiled no graph for this variant (it would run eager)")
    return compiled, seconds, f"{COMPILED}; {graphs} graphs, {breaks} graph breaks"


def _torchao_config(kind: str, asymmetric: bool = False) -> Any:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerGroup
    from torchao.quantization.quant_primitives import MappingType

    if kind == "int8 weight-only":
        return Int8WeightOnlyConfig()
    if kind == "int8 dynamic":
        return Int8DynamicActivationInt8WeightConfig()
    mapping = MappingType.ASYMMETRIC if asymmetric else MappingType.SYMMETRIC
    return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(INT4_GROUP), mapping_type=mapping)


def _ort_peer_int4(fp32_onnx: Path, out: Path, asymmetric: bool = False) -> Path:
    """ONNX Runtime's own int4 quantizer (round to nearest, :data:`INT4_GROUP` per block, symmetric or with zero
    points as shrink's rows, int8 compute) on the fp32 decoder file."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    config = DefaultWeightOnlyQuantConfig(block_size=INT4_GROUP, is_symmetric=not asymmetric, accuracy_level=4)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32_onnx)), algo_config=config)
    quantizer.process()
    onnx.save(quantizer.model.model, str(out))
    return out


@dataclass(frozen=True)
class Int4Setting:
    """How shrink's int4 rows are built, chosen for the run on the calibration windows (:func:`choose_int4`)."""

    clip: bool = False  # clipped group scales searched on the calibration windows, for the rows calibrated anyway
    rotated: bool = False  # the rotation folded into the weights (shrink.llm.rotate), for every int4 row
    asymmetric: bool = False  # zero points for every int4 group (shrink's rows, and the peers' int4 too)

    def describe(self) -> str:
        on = {True: "on", False: "off"}
        return f"clipped scales {on[self.clip]}, rotation {on[self.rotated]}, zero points {on[self.asymmetric]}"


INT4_SETTINGS = tuple(Int4Setting(c, r) for r in (False, True) for c in (False, True))  # the default first


def choose_int4(model: nn.Module, rotated: Callable[[], nn.Module], calib: torch.Tensor) -> tuple[Int4Setting, dict]:
    """The :class:`Int4Setting` under which int4 :data:`INT4_METHOD` does best on calibration windows it was not
    fitted on (:func:`shrink.llm.weight_only.held_out_choice`): each fitted on every other window, perplexity on the
    rest. First rotation x clipped scales (:data:`INT4_SETTINGS`, symmetric), then the best of them with zero
    points."""

    def build(setting: Int4Setting, fit: list[torch.Tensor]) -> nn.Module:
        base = rotated() if setting.rotated else model
        return quantize_weight_only(
            base, 4, INT4_GROUP, INT4_METHOD, fit, clip=setting.clip, sequential=True, asymmetric=setting.asymmetric
        )

    best, held = held_out_choice(build, INT4_SETTINGS, list(calib))
    asymmetric = replace(best, asymmetric=True)
    held |= held_out_choice(build, [asymmetric], list(calib))[1]
    return (asymmetric if held[asymmetric] < held[best] else best), held


def build_variants(
    model: nn.Module,
    calib: torch.Tensor,
    vocab: int,
    quick: bool,
    workdir: Path,
    int4: Int4Setting = Int4Setting(),
    rotated: Callable[[], nn.Module] | None = None,
) -> list[Callable[[], Variant]]:
    """Each entry builds one variant lazily; a quantized model that several rows run (eager, compiled, ONNX
    Runtime) is built once. ONNX files are written under ``workdir``. ``int4``: how every int4 row of shrink is
    built (chosen beforehand on the calibration windows: :func:`run`); ``rotated``: the rotated model they start
    from when ``int4.rotated`` (then one more row shows GPTQ without the rotation)."""
    windows = list(calib)
    if int4.rotated and rotated is None:
        raise ValueError("build_variants: int4.rotated needs the rotated model")

    def clipped(bits: int, method: str) -> bool:
        return int4.clip and bits == 4 and method != "rtn"  # round to nearest stays calibration-free

    def sequential(bits: int, method: str) -> bool:  # every row that reads layer inputs reads them block by block
        return method.endswith("gptq") or clipped(bits, method)

    def quantize(
        bits: int, method: str, lm_head_bits: int | None = None, rotate: bool = True
    ) -> tuple[nn.Module, float]:
        kwargs: dict[str, Any] = {
            "calibration": windows,
            "lm_head_bits": lm_head_bits,
            "clip": clipped(bits, method),
            "sequential": sequential(bits, method),
            "asymmetric": int4.asymmetric and bits == 4,
        }
        use_rotated = rotate and int4.rotated and bits == 4
        base = rotated() if use_rotated and rotated is not None else model
        return _timed(lambda: quantize_weight_only(base, bits, INT4_GROUP, method, **kwargs))  # type: ignore[arg-type]

    shared = functools.cache(quantize)  # the models several rows run (eager, compiled, ONNX Runtime)

    def quantized(bits: int, method: str, lm_head_bits: int | None = None) -> tuple[nn.Module, float]:
        reused = lm_head_bits is None and (bits == 8 or method == INT4_METHOD)
        return (shared if reused else quantize)(bits, method, lm_head_bits)

    @functools.cache
    def fp32_onnx() -> tuple[Path, float]:
        return _timed(lambda: export_decoder(model, workdir / "fp32.onnx"))

    def fp32() -> Variant:
        return Variant("fp32 eager", model, "PyTorch eager, fp32", 0.0)

    def compiled() -> Variant:
        c, s, how = _compiled(model, vocab)
        return Variant("fp32 torch.compile", c, f"fp32, {how}", 0.0, compile_s=s)

    @functools.cache
    def bf16_model() -> tuple[nn.Module, float, str]:
        m, s = _timed(lambda: copy.deepcopy(model).to(torch.bfloat16))
        native = native_bf16()
        return m, s, f"native {native}" if native else "no native bf16 instructions on this CPU"

    def bf16() -> Variant:
        m, s, native = bf16_model()
        return Variant("bf16 eager", m, f"PyTorch eager, bf16 ({native})", s)

    def bf16_compiled() -> Variant:
        m, s, native = bf16_model()
        c, cs, how = _compiled(m, vocab)
        return Variant("bf16 torch.compile", c, f"bf16 ({native}), {how}", s, compile_s=cs)

    def ort_fp32() -> Variant:
        path, s = fp32_onnx()
        how = "ONNX Runtime CPU, fp32 (shrink.llm.export_decoder, optimized graph)"
        return Variant("fp32 ONNX Runtime", OrtDecoder(path), how, s)

    def _how(bits: int, method: str, rotate: bool = True) -> str:
        clip = ", clipped" if clipped(bits, method) else ""
        clip += ", block-sequential" if sequential(bits, method) else ""
        rotation = ", rotated" if rotate and int4.rotated and bits == 4 else ""
        grid = "asymmetric" if int4.asymmetric else "symmetric"
        return f"{method}{clip}{rotation}, " + ("per-channel" if bits == 8 else f"{grid} group {INT4_GROUP}")

    def wo(bits: int, method: str, compile: bool = False) -> Callable[[], Variant]:
        def build() -> Variant:
            m, s = quantized(bits, method)
            kernel = f"aten.{'_weight_int8pack_mm' if bits == 8 else '_weight_int4pack_mm_for_cpu'}, bf16 activations"
            name = f"int{bits} weight-only ({_how(bits, method)})"
            if not compile:
                like = f"int4 weight-only ({_how(4, INT4_METHOD)})" if bits == 4 and method != INT4_METHOD else ""
                return Variant(name, m, kernel, s, same_speed_as=like)
            c, cs, how = _compiled(m, vocab)
            return Variant(f"{name} + torch.compile", c, f"{kernel}, {how}", s, compile_s=cs)

        return build

    def wo_ort(bits: int, method: str, lm_head_bits: int | None = None) -> Callable[[], Variant]:
        def build() -> Variant:
            m, s = quantized(bits, method, lm_head_bits)
            head = "" if lm_head_bits is None else f", int{lm_head_bits} lm_head"
            suffix = "" if lm_head_bits is None else f"-head{lm_head_bits}"
            path, es = _timed(lambda: export_decoder(m, workdir / f"int{bits}-{method}{suffix}.onnx"))
            name = f"int{bits} weight-only{head} ({_how(bits, method)}) on ONNX Runtime"
            return Variant(name, OrtDecoder(path), f"{ORT_NBITS.format(bits=bits)}, shrink's codes", s + es)

        return build

    def unrotated() -> Variant:
        m, s = quantize(4, INT4_METHOD, rotate=False)
        name = f"int4 weight-only without rotation ({_how(4, INT4_METHOD, rotate=False)})"
        like = f"int4 weight-only ({_how(4, INT4_METHOD)})"
        return Variant(name, m, "aten._weight_int4pack_mm_for_cpu, bf16 activations", s, same_speed_as=like)

    def kv8() -> Variant:
        error = kv_kernel_error()
        append = "fused C++ append kernel" if error is None else f"PyTorch operations: no kernel, {error}"
        execution = f"PyTorch eager, fp32; shrink Int8KVCache ({append})"
        return Variant("fp32 + int8 KV cache", model, execution, 0.0, Int8KVCache)

    def w8a8() -> Variant:
        dtype, parts = _float_parts()
        m, s = _timed(lambda: quantize_w8a8(model, windows, dtype=dtype))
        name = "W8A8 (SmoothQuant auto, GPTQ, per-token)"
        if quick:  # no compilation in the quick run
            return Variant(name, m, f"oneDNN int8 GEMMs, {parts}, eager", s)
        c, cs, how = _compiled(m, vocab)
        return Variant(f"{name} + torch.compile", c, f"oneDNN int8 GEMMs, {parts}, {how}", s, compile_s=cs)

    def pruned(mode: str | None) -> Callable[[], Variant]:
        def build() -> Variant:
            def make() -> nn.Module:
                small = prune_llama(model, PRUNE_RATIO, PRUNE_RATIO, calibration=windows)
                if mode is not None:
                    steps = RECOVERY_STEPS[quick]
                    recover(small, windows, steps, model if mode == "kd" else None, mode, RECOVERY_LR)  # type: ignore[arg-type]
                return small

            m, s = _timed(make)
            what = "no recovery" if mode is None else f"{mode} recovery, {RECOVERY_STEPS[quick]} steps"
            like = "" if mode == "kd" else f"pruned (kd recovery, {RECOVERY_STEPS[quick]} steps)"
            return Variant(f"pruned ({what})", m, "PyTorch eager, fp32, physically smaller", s, same_speed_as=like)

        return build

    def peer(kind: str) -> Callable[[], Variant]:
        def build() -> Variant:
            name = f"torchao {kind}{f' g{INT4_GROUP}' if 'int4' in kind else ''} + torch.compile"
            try:
                from torchao.quantization import quantize_

                dtype, parts = _float_parts()
                m = copy.deepcopy(model).eval().to(dtype)
                _, s = _timed(lambda: quantize_(m, _torchao_config(kind, int4.asymmetric)))
                c, cs, how = _compiled(m, vocab)
            except Exception as exc:  # a peer that fails is a row saying so
                return Variant(name, None, "torchao", 0.0, error=f"{type(exc).__name__}: {str(exc)[:200]}")
            grid = (" (asymmetric: zero points)" if int4.asymmetric else " (symmetric)") if "int4" in kind else ""
            return Variant(name, c, f"torchao {kind}{grid}, {parts}, {how}", s, compile_s=cs)

        return build

    def ort_peer() -> Variant:
        grid = "asymmetric" if int4.asymmetric else "symmetric"
        name = f"ONNX Runtime int4 quantizer (rtn, {grid} g{INT4_GROUP})"
        try:
            path, s = _timed(lambda: _ort_peer_int4(fp32_onnx()[0], workdir / "ort-int4.onnx", int4.asymmetric))
            decoder = OrtDecoder(path)
        except Exception as exc:  # a peer that fails is a row saying so
            return Variant(name, None, "ONNX Runtime", 0.0, error=f"{type(exc).__name__}: {str(exc)[:200]}")
        return Variant(name, decoder, f"{ORT_NBITS.format(bits=4)}, ONNX Runtime's MatMulNBitsQuantizer", s)

    int4_rows = [wo(4, "rtn"), wo(4, "gptq"), wo(4, "awq"), wo(4, "awq+gptq")]
    without = [unrotated] if int4.rotated else []
    if quick:
        return [fp32, bf16, ort_fp32, wo(8, "rtn"), wo_ort(8, "rtn"), *int4_rows[:2], *without, wo_ort(4, INT4_METHOD),
                kv8, w8a8, pruned(None), pruned("kd"), pruned("hard")]  # fmt: skip
    peers = [peer("int8 weight-only"), peer("int4 weight-only"), peer("int8 dynamic"), ort_peer]
    return [fp32, compiled, bf16, bf16_compiled, ort_fp32, wo(8, "rtn"), wo(8, "rtn", compile=True), wo_ort(8, "rtn"),
            *int4_rows, *without, wo(4, INT4_METHOD, compile=True), wo_ort(4, INT4_METHOD), wo_ort(4, INT4_METHOD, 8),
            kv8, w8a8, pruned(None), pruned("kd"), pruned("hard"), *peers]  # fmt: skip


def _cache_factory(v: Variant) -> Callable[[], Any]:
    """The KV cache every call of the variant starts from (rows prefill into a cache, as generation does)."""
    if isinstance(v.model, OrtDecoder):
        return v.model.new_cache
    return v.cache or DynamicCache


def _idle_rss() -> int:
    """Resident bytes of this process after freeing what can be freed (Python garbage, glibc's free lists)."""
    import psutil

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: the figure then includes freed-but-kept heap
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return psutil.Process().memory_info().rss


def measure(v: Variant, ref_tokens: list[torch.Tensor] | None, evals: torch.Tensor, prompts: list) -> Row:
    """Quality, sizes and scoring memory of one variant (speeds come later, from :func:`time_interleaved`)."""
    row = Row(v.name, {"execution": v.execution, "build s": v.build_s, "compile s": v.compile_s})
    if v.same_speed_as:
        row.values["same speed as"] = v.same_speed_as
    if v.model is None:
        row.values["execution"] = f"failed: {v.error}"
        return row
    cache = _cache_factory(v)
    idle = _idle_rss()
    row.values["ppl"], rss = peak_rss(lambda: perplexity(v.model, evals, cache))
    row.values["scoring MiB"] = max(0, rss - idle) / 2**20
    tokens = greedy_tokens(v.model, prompts, new_tokens=32, cache=cache)
    row.values["tokens"] = tokens
    row.values["agreement"] = 1.0 if ref_tokens is None else token_agreement(ref_tokens, tokens)
    row.values["prefix"] = 1.0 if ref_tokens is None else matching_prefix(ref_tokens, tokens)
    with torch.inference_mode():
        past = v.model(input_ids=evals[:1], past_key_values=cache(), use_cache=True).past_key_values
    row.values["KV MiB @512"] = (past.nbytes() if isinstance(past, OrtCache) else cache_bytes(past)) / 2**20
    if isinstance(v.model, OrtDecoder):
        row.values["weights MiB"] = v.model.weight_bytes() / 2**20
        row.values["file MiB"] = v.model.file_bytes() / 2**20
        return row
    inner = v.model.model if isinstance(v.model, CompiledInt8) else v.model
    row.values["weights MiB"] = _weight_bytes(inner) / 2**20
    try:
        row.values["file MiB"] = file_size(inner) / 2**20
    except NotImplementedError:  # prepacked oneDNN int8 weights are a runtime object, not saveable with torch.save
        row.values["file MiB"] = "n/a (runtime prepacked)"
    return row


def time_interleaved(live: list[tuple[Row, Variant]], vocab: int, quick: bool) -> None:
    """Prefill and decode speeds of every live variant, timed round after round over all of them (so drifts in the
    machine's speed fall on every row alike), each timed round in its own shuffled order (so does a row's place in
    the round: which row ran just before it); round 0 is discarded. Prefill: median over rounds; decode: tokens/s
    from the median of every timed step."""
    prefill: dict[str, list[float]] = {r.name: [] for r, _ in live}
    steps: dict[str, list[float]] = {r.name: [] for r, _ in live}
    for round_ in range(ROUNDS[quick]):
        order = live if round_ == 0 else random.Random(round_).sample(live, len(live))  # seeded: the same each run
        for row, v in order:
            cache = _cache_factory(v)
            p = prefill_latency(v.model, CONTEXT, repeats=1, warmup=0, vocab=vocab, cache=cache)
            d = decode_step_times(v.model, 64, DECODE_STEPS[quick], cache, vocab)
            if round_:
                prefill[row.name].append(p)
                steps[row.name] += d
        print(f"timing round {round_ + 1}/{ROUNDS[quick]} done", flush=True)
    for row, _ in live:
        row.values["prefill ms"] = 1e3 * statistics.median(prefill[row.name])
        row.values["decode tok/s"] = 1.0 / statistics.median(steps[row.name])


COLUMNS = ["variant", "execution", "ppl", "Δppl", "agreement", "same prefix", "prefill ms", "decode tok/s",
           "weights MiB", "KV MiB @512", "file MiB", "scoring MiB", "build s", "compile s"]  # fmt: skip


def table(rows: list[Row]) -> Table:
    base = rows[0].values["ppl"]
    t = Table("SmolLM2-135M-Instruct, batch 1, 2 threads", COLUMNS)
    for r in rows:
        v = r.values
        if "ppl" not in v:  # a peer that failed
            t.add(r.name, v["execution"], *["—"] * (len(COLUMNS) - 3), "—")
            continue
        compile_s = "—" if v["compile s"] is None else v["compile s"]
        t.add(r.name, v["execution"], v["ppl"], f"{100 * (v['ppl'] / base - 1):+.2f}%", f"{v['agreement']:.3f}",
              f"{v['prefix']:.3f}", v.get("prefill ms", "—"), v.get("decode tok/s", "—"), v["weights MiB"],
              v["KV MiB @512"], v["file MiB"], v["scoring MiB"], v["build s"], compile_s)  # fmt: skip
    return t


FLOAT_ROWS = ("fp32 eager", "fp32 torch.compile", "bf16 eager", "bf16 torch.compile", "fp32 ONNX Runtime")


def _rows_like(by: dict[str, dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [v for n, v in by.items() if n.startswith(prefix) and "ppl" in v]


def _speed(
    name: str, rows: list[dict[str, Any]], key: str, goal: float, best: float, against: str = "the fastest float row"
) -> Target | None:
    """``goal``x ``best`` (``against`` names it) for the fastest of ``rows`` (prefill: lower ms; decode: more
    tokens/s)."""
    if not rows:
        return None
    higher = key == "decode tok/s"
    mine = max(r[key] for r in rows) if higher else min(r[key] for r in rows)
    ratio = mine / best if higher else best / mine
    return Target(22, name, f"{key} >= {goal:g}x {against}", f"{ratio:.2f}x", ratio >= goal)


def _ppl(name: str, row: dict[str, Any] | None, base: float, limit: float) -> Target | None:
    if row is None:
        return None
    d = row["ppl"] / base - 1
    return Target(22, name, f"perplexity within {100 * limit:.0f}% of fp32", f"{100 * d:+.2f}%", d <= limit)


def _versus_peer(
    name: str, mine: list[dict[str, Any]], peer: dict[str, Any] | None, key: str, how: str = "compiled for torchao"
) -> Target:
    """shrink's fastest row of a kind against the peer's row of that kind (n/a when the peer did not run);
    ``how``: the peer's execution, as the goal names it."""
    goal = f"{key}: shrink's best row of the kind beats the peer's row ({how})"
    if not mine or peer is None or "ppl" not in peer:
        return Target(22, name, goal, "peer row missing or failed", None)
    higher = key == "decode tok/s"
    best = max(r[key] for r in mine) if higher else min(r[key] for r in mine)
    met = best > peer[key] if higher else best < peer[key]
    return Target(22, name, goal, f"{best:.4g} vs {peer[key]:.4g}", met)


def targets(rows: list[Row]) -> list[Target]:
    """The issue's targets, read off this run (fixed here, not tuned to the results)."""
    by = {r.name: r.values for r in rows}
    fp32 = by["fp32 eager"]
    floats = [by[n] for n in FLOAT_ROWS if n in by]
    best_prefill = min(f["prefill ms"] for f in floats)
    best_decode = max(f["decode tok/s"] for f in floats)
    w8a8, int8 = _rows_like(by, "W8A8"), _rows_like(by, "int8 weight-only")
    int4 = _rows_like(by, f"int4 weight-only ({INT4_METHOD},")
    rtn = next(iter(_rows_like(by, "int4 weight-only (rtn")), None)
    head8 = next(iter(_rows_like(by, f"int4 weight-only, int8 lm_head ({INT4_METHOD},")), None)
    kv = next(iter(_rows_like(by, "fp32 + int8 KV")), None)
    base = fp32["ppl"]
    out = [
        _ppl("W8A8 perplexity", w8a8[0] if w8a8 else None, base, 0.02),
        _speed("W8A8 prefill (512 tokens)", w8a8, "prefill ms", 2.0, best_prefill),
        _speed("int8 weight-only decode", int8, "decode tok/s", 2.0, best_decode),
        _speed(f"int4 weight-only decode ({INT4_METHOD.upper()})", int4, "decode tok/s", 3.0, best_decode),
        _ppl(
            f"int4 perplexity ({INT4_METHOD.upper()}, group {INT4_GROUP}, not the Q4_1 grid)",
            int4[0] if int4 else None,
            base,
            0.08,
        ),  # fmt: skip
        _ppl(f"int4 perplexity, lm_head at int8 ({INT4_METHOD.upper()}, group {INT4_GROUP})", head8, base, 0.08),
    ]
    if rtn is not None:
        for method in ("gptq", "awq", "awq+gptq"):
            other = next(iter(_rows_like(by, f"int4 weight-only ({method},")), None)
            if other is not None:
                out.append(Target(22, f"int4 {method} better than round-to-nearest", "lower perplexity",
                                  f"{other['ppl']:.2f} vs {rtn['ppl']:.2f}", other["ppl"] < rtn["ppl"]))  # fmt: skip
    if kv is not None:
        ratio = fp32["KV MiB @512"] / kv["KV MiB @512"]
        out.append(Target(22, "int8 KV cache memory", ">= 3.8x smaller (4x less fp16 scales)", f"{ratio:.2f}x",
                          ratio >= 3.8))  # fmt: skip
        out.append(_ppl("int8 KV cache perplexity", kv, base, 0.01))
        out.append(_speed("int8 KV cache decode", [kv], "decode tok/s", 0.95, fp32["decode tok/s"],
                          "fp32 eager (the float model it caches for)"))  # fmt: skip
    kd, hard = next(iter(_rows_like(by, "pruned (kd")), None), next(iter(_rows_like(by, "pruned (hard")), None)
    if kd is not None and hard is not None:
        goal = "perplexity after KD < after hard-label fine-tuning, same steps"
        measured = f"{kd['ppl']:.2f} vs {hard['ppl']:.2f}"
        out.append(Target(22, "pruning: distillation beats hard labels", goal, measured, kd["ppl"] < hard["ppl"]))
    ort_peer = next(iter(_rows_like(by, "ONNX Runtime int4 quantizer")), None)
    if ort_peer is not None or any(n.startswith("ONNX Runtime int4") for n in by):
        out.append(_versus_peer("int4 weight-only vs ONNX Runtime's quantizer", int4, ort_peer, "decode tok/s",
                                "its MatMulNBits in ONNX Runtime"))  # fmt: skip
        if ort_peer is not None and int4:
            mine, theirs = int4[0]["ppl"], ort_peer["ppl"]
            out.append(Target(22, "int4 perplexity vs ONNX Runtime's quantizer", "lower perplexity (same grid)",
                              f"{mine:.2f} vs {theirs:.2f}", mine < theirs))  # fmt: skip
    peers = {k: by.get(f"torchao {k} + torch.compile") for k in ("int8 weight-only", f"int4 weight-only g{INT4_GROUP}",
                                                                  "int8 dynamic")}  # fmt: skip
    if any(n.startswith("torchao") for n in by):
        out.append(_versus_peer("int8 weight-only vs torchao", int8, peers["int8 weight-only"], "decode tok/s"))
        out.append(_versus_peer("int4 weight-only vs torchao", int4, peers[f"int4 weight-only g{INT4_GROUP}"],
                                "decode tok/s"))  # fmt: skip
        out.append(_versus_peer("W8A8 prefill vs torchao int8 dynamic", w8a8, peers["int8 dynamic"], "prefill ms"))
    return [t for t in out if t is not None]


def samples(rows: list[Row], tokenizer: Any) -> Table:
    t = Table(f"Greedy continuation of the first prompt ({PROMPTS[0]!r}), 32 tokens", ["variant", "text"])
    for r in rows:
        if "tokens" in r.values:
            t.add(r.name, tokenizer.decode(r.values["tokens"][0]).strip())
    return t


def render(rows: list[Row], tokenizer: Any, marks: list[Target], facts: dict[str, str], seconds: float) -> str:
    lines = [f"# {TITLE}", "", "Generated by `make bench-llm` (`python -m benchmarks.llm`); nothing here is typed "
             "by hand.", ""]  # fmt: skip
    lines += [f"- {k}: {v}" for k, v in facts.items()] + [f"- whole run: {seconds:.0f} s", ""]
    lines += [table(rows).markdown(), "", "**Targets (issue 22)**", "", "| target | goal | measured | met |",
              "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {m.name} | {m.goal} | {m.measured} | {m.verdict} |" for m in marks]
    lines += ["", samples(rows, tokenizer).markdown(), ""]
    return "\n".join(lines)


def run(quick: bool) -> tuple[list[Row], Any, list[Target], dict[str, str]]:
    import onnxruntime

    torch.set_num_threads(THREADS)
    torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
    torch._dynamo.config.accumulated_recompile_limit = 64 * RECOMPILE_LIMIT
    (model, tokenizer), load_s = _timed(load_smollm2)
    texts = llm_texts()
    evals = token_windows(tokenizer, texts.evaluation, CONTEXT, limit=EVALUATION_WINDOWS[quick])
    calib = token_windows(tokenizer, texts.calibration, CONTEXT, limit=CALIBRATION_WINDOWS[quick])
    prompts = [torch.tensor(tokenizer(p)["input_ids"]) for p in (PROMPTS[:4] if quick else PROMPTS)]
    vocab = int(model.config.vocab_size)
    rows: list[Row] = []
    live: list[tuple[Row, Variant]] = []
    facts = run_facts()

    @functools.cache
    def rotated() -> tuple[nn.Module, Rotation, float]:
        (m, how), seconds = _timed(lambda: rotate_llama(model))
        return m, how, seconds

    rotated_model = lambda: rotated()[0]  # noqa: E731
    (setting, held), choice_s = _timed(lambda: choose_int4(model, rotated_model, calib))
    fit = (calib.shape[0] + 1) // 2
    figures = "; ".join(f"{s.describe()} {p:.3f}" for s, p in held.items())
    facts["int4 settings"] = (
        f"{setting.describe()} for shrink's int4 rows (clipped scales: the rows calibrated anyway, not round to "
        "nearest), chosen in this run on the calibration windows alone: block-sequential "
        f"{INT4_METHOD.upper()} int4 fitted on every other window ({fit}), perplexity on the "
        f"other {calib.shape[0] - fit}: {figures} ({choice_s:.0f} s, not in any row's build s). First rotation x "
        "clipped scales, symmetric; then the best of those with zero points. The peers' int4 rows follow the "
        "grid chosen (symmetric, or with zero points). Groups of 64 are not the Q4_1 grid the weights were stored on "
        "(groups of 32 with a minimum), and the rotation mixes the weights across those groups"
    )
    if setting.rotated:
        _, rotation, rotate_s = rotated()
        facts["rotation"] = (
            f"shrink.llm.rotate.rotate_llama: residual stream {rotation.residual}, value heads {rotation.heads}, "
            f"folded into the weights before quantization ({rotate_s:.1f} s); the float function is unchanged"
        )
    with tempfile.TemporaryDirectory(prefix="shrink-bench-llm-") as tmp:
        base = rotated_model if setting.rotated else None
        for build in build_variants(model, calib, vocab, quick, Path(tmp), setting, base):
            variant = build()
            rows.append(measure(variant, rows[0].values["tokens"] if rows else None, evals, prompts))
            if variant.model is not None and not variant.same_speed_as:
                live.append((rows[-1], variant))
            del variant  # an untimed row's model is released here
            print(f"{rows[-1].name}: " + ", ".join(f"{k} {v:.4g}" for k, v in rows[-1].values.items()
                                                   if isinstance(v, float))
                  + f"; process {_idle_rss() / 2**30:.2f} GiB resident", flush=True)  # fmt: skip
        rotated.cache_clear()  # every row is built: the rotated float model is no longer needed
        facts["resident before timing"] = f"{_idle_rss() / 2**30:.2f} GiB ({len(live)} timed rows kept)"
        time_interleaved(live, vocab, quick)
        del live
    facts["load average (1/5/15 min) at end"] = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    facts |= {
        "threads": f"{THREADS}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}",
        "model load": f"{load_s:.1f} s (cached float safetensors after the first GGUF de-quantization)",
        "evaluation": f"{evals.shape[0]} windows x {CONTEXT} tokens evenly spread over "
        + ", ".join(d.name for d in texts.evaluation),
        "calibration": f"{calib.shape[0]} windows x {CONTEXT} tokens evenly spread over "
        + ", ".join(d.name for d in texts.calibration)
        + " (other documents than the evaluation's)",
        "agreement": f"{len(prompts)} fixed prompts x 32 greedy tokens, position by position against fp32 eager; "
        "'same prefix': the mean fraction of the 32 generated before the first token that differs",
        "speeds": f"timed interleaved: {ROUNDS[quick] - 1} rounds over every row after a warm-up round, each in its "
        "own seeded shuffled order (runs before 2026-12-06 kept the table's order in every round); prefill "
        f"{CONTEXT} tokens into a fresh KV cache (median of rounds), with the logits of the last position alone, as "
        "transformers' generate computes them (the other positions' logits are for scoring a text, not for "
        "generating; runs before 2026-12-05 computed all of them); decode "
        f"{DECODE_STEPS[quick]} steps per round after a 64-token prompt (median step). Rows with — are not timed: "
        "they run the int4 kernel or the pruned shapes of the row named "
        "(the AWQ rows add one input scaling per layer): "
        + "; ".join(f"{r.name} as {r.values['same speed as']}" for r in rows if "same speed as" in r.values),
        "scoring MiB": "resident memory the perplexity pass adds to the process (peak, sampled every 2 ms, minus "
        "the resident size just before, garbage freed); the model's own bytes are 'weights MiB'",
        "float parts": f"W8A8 and every torchao row: {_float_parts()[1]} (embeddings, norms, attention, lm_head; "
        "the W8A8 int8 layers quantize their rows and apply their scales in float32); shrink's weight-only rows "
        "in PyTorch compute in bf16 activations",
    }
    return rows, tokenizer, targets(rows), facts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks-llm.md"))
    parser.add_argument("--quick", action="store_true", help="fewer windows, prompts and variants (minutes)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows, tokenizer, marks, facts = run(args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(rows, tokenizer, marks, facts, time.perf_counter() - start), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
