"""Where shrink's int8 time goes on this CPU: MiniLM's int8 model profiled at batch 1 beside the float model, and each
of its int8 Linears taken apart (the kernel that quantizes the input rows, the int8 GEMM) beside the same Linear in
float, at the token counts of batch 1 and batch 32.

The MiniLM section's speed targets compare whole models; this section shows which kernels make up the difference, so
that a reader can tell whether a missed target is the int8 GEMM, the quantization around it or the float parts.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

import shrink
from benchmarks.baselines import as_precision, native_bf16, sdpa_copy
from benchmarks.common import Section, Table
from benchmarks.op_profile import breakdown_table, compiled_for_profile, kernel_times, profile_ops
from benchmarks.quant_minilm import MIN_X_BEST_FLOAT
from shrink import presets
from shrink.quant import to_torch_int8
from shrink.quant.runtimes.torch_token import TokenInt8Linear
from shrink.zoo.minilm import load_minilm, minilm_data

TITLE = "Where the int8 time goes: MiniLM's int8 kernels beside float"

#: the Linears of MiniLM's first encoder layer, one of each shape (the other layers have the same shapes); the query
#: / key / value Linears run as one merged GEMM in shrink's int8 model and as three float GEMMs in the float model
FIRST_LAYER = "encoder.encoder.layer.0"
LINEARS = {
    "query + key + value (merged)": ("attention.self.query", "attention.self.key", "attention.self.value"),
    "attention output": ("attention.output.dense",),
    "FFN in": ("intermediate.dense",),
    "FFN out": ("output.dense",),
}


def _int8_linear(model: nn.Module, names: tuple[str, ...]) -> TokenInt8Linear:
    """The int8 Linear that runs ``names`` of the first layer in shrink's int8 model (a merged group's GEMM)."""
    module = model.get_submodule(f"{FIRST_LAYER}.{names[0]}")
    layer = getattr(getattr(module, "shared", None), "fused", module)
    if not isinstance(layer, TokenInt8Linear):
        raise TypeError(f"{FIRST_LAYER}.{names[0]} runs as {type(layer).__name__}, not an int8 Linear")
    return layer


class _FloatGroup(nn.Module):
    """The float Linears of one group, each applied to the same input (three GEMMs for query / key / value)."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(layer(x) for layer in self.layers)


def _profile(model: nn.Module, x: Any, calls: int) -> dict[str, float]:
    """:func:`profile_ops` of ``model`` compiled for ``x``'s shape with per-kernel profiler scopes."""
    run = compiled_for_profile(model, x)
    return profile_ops(lambda: run(x), calls)


def _us(ms: float) -> str:
    return f"{ms * 1e3:.0f}"


#: per batch size, the kernel times (ms) summed over one encoder layer's Linears: float (all kernels), int8 (all
#: kernels) and the int8 GEMMs alone
LayerSums = dict[int, tuple[float, float, float]]


def linear_table(
    float_model: nn.Module, int8_model: nn.Module, tokens: dict[int, int], bf16: bool, calls: int
) -> tuple[Table, LayerSums]:
    """Kernel time of each int8 Linear shape of MiniLM against the same Linears in float, per token count, and the
    sums over the layer's Linears (for :func:`ceiling_table`)."""
    layers = len(list(float_model.get_submodule(FIRST_LAYER.rsplit(".", 1)[0]).children()))
    dtype = torch.bfloat16 if bf16 else torch.float32
    label = "bf16" if bf16 else "fp32"
    table = Table(
        "One int8 Linear taken apart: kernel time per call (µs), torch.profiler",
        [
            "Linear (inputs → outputs)",
            "batch (tokens)",
            "int8: quantize rows",
            "int8: GEMM",
            "int8: other kernels",
            "int8: all kernels",
            f"{label}: all kernels",
            f"GEMM: {label} / int8",
            f"all kernels: {label} / int8",
        ],
    )
    sums: dict[int, list[float]] = {batch: [0.0, 0.0, 0.0] for batch in tokens}
    for name, names in LINEARS.items():
        int8 = _int8_linear(int8_model, names)
        floats = [copy.deepcopy(float_model.get_submodule(f"{FIRST_LAYER}.{n}")).to(dtype) for n in names]
        shape = f"{name} ({int8.in_features} → {int8.out_features})"
        for batch, length in tokens.items():
            torch.manual_seed(0)  # kernel times do not depend on the values; a fixed input all the same
            x = torch.randn(batch, length, int8.in_features)
            q = kernel_times(_profile(int8, x, calls))
            f = kernel_times(_profile(_FloatGroup(floats), x.to(dtype), calls))
            q_all, f_all = sum(q.values()), sum(f.values())
            for i, ms in enumerate((f_all, q_all, q["GEMM"])):
                sums[batch][i] += ms
            table.add(
                shape,
                f"{batch} ({batch * length})",
                _us(q["quantization"]),
                _us(q["GEMM"]),
                _us(q["other kernels"]),
                _us(q_all),
                _us(f_all),
                f"{f['GEMM'] / q['GEMM']:.2f}x" if q["GEMM"] else "-",
                f"{f_all / q_all:.2f}x" if q_all else "-",
            )
    table.note = (
        f"The Linears of MiniLM's first encoder layer (the other {layers - 1} have the same shapes) with the int8 "
        "recipe's weights, each compiled alone for one input shape (Inductor, frozen weights, GEMM autotuning, as "
        "shrink compiles them) with Inductor's per-kernel profiler scopes, on a random input of the shape of the "
        f"MiniLM table's batch 1 and batch 32 (kernel times do not depend on the values); {calls} profiled calls each. "
        f"'quantize rows': the kernel that finds each row's minimum and maximum and rounds it to uint8 (in the whole "
        f"model it also runs the LayerNorm or GELU before it); 'GEMM': the uint8 x int8 GEMM kernel with its "
        f"epilogue (per-channel and per-row scales, bias); float: the same weights in {label}, query / key / value "
        f"as three GEMMs as the float model runs them. Framework time between kernels is left out."
    )
    return table, {batch: (f, q, g) for batch, (f, q, g) in sums.items()}


#: the most int8 multiply-adds per cycle over bf16 ones on CPUs with native bf16 (see :func:`ceiling_table`)
INT8_OVER_BF16_PEAK = 2.0


def ceiling_table(sums: LayerSums, bf16: bool, targets: dict[int, float]) -> Table:
    """How far int8 can go in MiniLM's Linears on this CPU: the layer's Linears in float over int8 as measured, and
    as they would be if the row-quantization kernels cost nothing (the int8 GEMMs alone), beside the MiniLM
    section's whole-model targets ``targets`` (batch size -> x best float) and, where the float model is bf16, the
    instruction-set ceiling of int8 over bf16."""
    label = "bf16" if bf16 else "fp32"
    table = Table(
        "How far int8 can go: one encoder layer's Linears, kernel time per call (µs)",
        [
            "batch (tokens)",
            f"{label} Linears",
            "int8 Linears",
            "int8 GEMMs alone",
            f"{label} / int8, measured",
            f"{label} / int8 if row quantization were free",
            "whole-model target (x best float)",
        ],
    )
    for batch, (f, q, g) in sums.items():
        target = targets.get(batch)
        table.add(
            str(batch),
            _us(f),
            _us(q),
            _us(g),
            f"{f / q:.2f}x" if q else "-",
            f"{f / g:.2f}x" if g else "-",
            f"{target:.1f}x" if target is not None else "-",
        )
    note = (
        "Sums over the four Linear shapes of the table above (each occurs once in each encoder layer). The last "
        "ratio is what int8 Linears could reach with these GEMM kernels if the quantization of their input rows "
        "cost nothing. It is measured with each Linear alone, its weights warm in cache; inside the whole model, "
        "where each Linear's weights are read from memory again, int8's smaller weights count for more, most at "
        "batch 1."
    )
    if bf16:
        note += (
            f" On a CPU with native bf16 an int8 GEMM can beat a bf16 GEMM by at most {INT8_OVER_BF16_PEAK:.0f}x in "
            "arithmetic (AMX does 2,048 int8 or 1,024 bf16 operations per cycle per core, Intel's figures for "
            "4th-generation Xeon; without AMX, AVX-512 VPDPBUSD multiplies 64 int8 pairs per instruction where "
            f"VDPBF16PS multiplies 32 bf16 pairs) and by {INT8_OVER_BF16_PEAK:.0f}x in weight bytes. A whole-model "
            "target above that ratio against a bf16 baseline also needs attention, LayerNorm, softmax and the time "
            "between kernels to run faster than in the compiled float model, where int8 does not help them."
        )
    table.note = note
    return table


def run(quick: bool) -> Section:
    torch.set_num_threads(2)
    model, data = load_minilm(), minilm_data()
    x1, x32 = data.example_inputs, next(iter(data.test))  # the MiniLM table's batch-1 input and 32-sentence batch
    quantized = shrink.quantize(model, presets.get("encoder-int8"), calibration=data.calibration, progress=False)
    int8 = to_torch_int8(quantized, example_inputs=x1)
    bf16 = native_bf16()
    float_label = "bf16, compiled (native bf16)" if bf16 else "fp32, compiled"
    calls = 10 if quick else 50
    profiles = {f"{float_label}, eager attention": _profile(as_precision(model, bf16), x1, calls)}
    if (sdpa := sdpa_copy(model)) is not None:
        profiles[f"{float_label}, SDPA attention"] = _profile(as_precision(sdpa, bf16), x1, calls)
    profiles["shrink int8, compiled"] = _profile(int8, x1, calls)
    whole = breakdown_table("MiniLM at batch 1: where the time goes (torch.profiler, CPU self time per call)", profiles)
    whole.note = (
        f"The MiniLM table's batch-1 input ({x1['input_ids'].shape[1]} tokens) through the float model ({float_label}; "
        "with the eager attention the zoo loads and with PyTorch's SDPA attention) "
        "and shrink's int8 model (the encoder-int8 recipe on its calibration split), each compiled for this shape "
        "with Inductor's per-kernel profiler scopes; operators grouped by kind as in the batch-32 breakdown of the "
        f"MiniLM section; {calls} profiled calls. 'other': framework time between kernels."
    )
    lengths = {1: int(x1["input_ids"].shape[1]), 32: int(x32["input_ids"].shape[1])}
    if int(x32["input_ids"].shape[0]) != 32:
        raise ValueError(f"the MiniLM test batch has {x32['input_ids'].shape[0]} sentences, expected 32")
    linears, sums = linear_table(model, int8, lengths, bf16, calls)
    ceiling = ceiling_table(sums, bf16, MIN_X_BEST_FLOAT)
    intro = (
        "The MiniLM section times whole models; here the int8 model is taken apart on the same inputs, to show which "
        "kernels its time goes to beside the float model's."
    )
    return Section(TITLE, intro=intro, tables=[whole, linears, ceiling])


def main(argv: list[str] | None = None) -> Any:  # pragma: no cover - manual runs
    section = run(quick=False)
    for table in section.tables:
        print(table.markdown())
    return section


if __name__ == "__main__":  # pragma: no cover
    main()
