"""Issue 4, compression: SVD / Tucker-2 / CP at half the parameters of the decomposed layers (digits accuracy after
short fine-tuning, latency on digits and the ResNet-style net) and Deep Compression of the digits CNN."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import shrink
from benchmarks.baselines import ms_cell, time_together
from benchmarks.common import Fact, Section, Table
from benchmarks.targets import deep_compression_targets, lowrank_target
from shrink.deepcomp import DeepCompression, huffman, load_compressed, read_compressed, summarize
from shrink.deepcomp.io import save_compressed
from shrink.eval.metrics import accuracy, predict
from shrink.lowrank import CPDecomposition, SVDDecomposition, TuckerDecomposition
from shrink.select import Selector
from shrink.train import FineTune

TITLE = "Low-rank decomposition and Deep Compression (issue 4)"


def _acc(model, data) -> float:
    out, target = predict(model, data.test)
    return accuracy(out, target)


def _params(model, names) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if any(n.startswith(x + ".") for x in names))


def _lowrank(quick: bool, section: Section) -> None:
    from shrink.zoo import digits_data, digits_teacher, resnet18

    teacher, data = digits_teacher(progress=False), digits_data()
    base = _acc(teacher, data)
    convs = ("features.3", "features.7")
    cases = [
        (
            "SVD (classifier.1)",
            SVDDecomposition(param_fraction=0.5, selector=Selector(include=("classifier.1",))),
            ("classifier.1",),
        ),
        ("Tucker-2 (conv 2, 3)", TuckerDecomposition(param_fraction=0.5, selector=Selector(include=convs)), convs),
        (
            "CP (conv 2, 3)",
            CPDecomposition(param_fraction=0.5, n_iter=30 if quick else 100, selector=Selector(include=convs)),
            convs,
        ),
    ]
    epochs = 1 if quick else 3
    x = data.example_inputs
    table = Table(
        "Digits CNN: decomposed layers at ≤ 50% of their parameters, then short fine-tuning",
        [
            "method",
            "layer params",
            "acc after decomposition %",
            f"acc after {epochs}-epoch fine-tune %",
            "latency b=1 ms (torch)",
        ],
    )
    rows: list[list] = [["fp32", _params(teacher, ("classifier.1",) + convs), base, base]]
    models = {"fp32": teacher}
    worst = 0.0
    for name, cfg, layers in cases:
        dec = shrink.decompose(teacher, cfg)
        raw = _acc(dec, data)
        torch.manual_seed(0)
        tuned = shrink.finetune(dec, FineTune(epochs=epochs, lr=5e-4), train=data.train, progress=False)
        acc = _acc(tuned, data)
        worst = max(worst, base - acc)
        rows.append([name, f"{_params(teacher, layers)} -> {_params(dec, layers)}", raw, acc])
        models[name] = tuned
    lat = time_together({k: (lambda x, m=m: m(x)) for k, m in models.items()}, {1: x}, rounds=9)
    for row in rows:
        table.add(*row, ms_cell(lat[row[0]][1]))
    table.note = "Latencies timed together in interleaved rounds."
    section.tables.append(table)
    section.targets.append(lowrank_target(worst))

    net = resnet18(num_classes=10, small_input=True)
    sel = Selector(include=(r"re:layer[34]\..*conv\d",), types=("Conv2d",))
    xr = torch.randn(1, 3, 32, 32)
    lat = Table(
        "ResNet-18-style (32x32 input, random weights): latency of Tucker-2 at half the params of "
        "layer3/layer4 3x3 convs",
        ["model", "params", "latency b=1 ms (torch)", "latency b=8 ms (torch)"],
    )
    tucker = shrink.decompose(net, TuckerDecomposition(param_fraction=0.5, selector=sel, method="hosvd"))
    x8 = xr.repeat(8, 1, 1, 1)
    pair = {"fp32": net, "Tucker-2 50%": tucker}
    timed = time_together({k: (lambda x, m=m: m(x)) for k, m in pair.items()}, {1: xr, 8: x8}, rounds=9)
    for name, m in pair.items():
        lat.add(name, sum(p.numel() for p in m.parameters()), ms_cell(timed[name][1]), ms_cell(timed[name][8]))
    lat.note = (
        "Random weights: latency only. Smaller layers need not run faster (three convs instead of one). Timed "
        "together in interleaved rounds."
    )
    section.tables.append(lat)


def _median_ms(fn: Callable[[], object], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _huffman_throughput(quick: bool) -> Table:
    """Decode speed of the table-driven Huffman decoder on skewed streams (like cluster indices and gaps)."""
    rng = np.random.default_rng(0)
    table = Table(
        "Huffman decoder speed (table-driven, vectorised; one thread of numpy)",
        ["symbols", "alphabet", "longest code (bits)", "bits/symbol", "decode ms", "M symbols/s"],
    )
    for n, alphabet in ((10**5, 32), (10**6 if not quick else 3 * 10**5, 256)):
        symbols = np.minimum(rng.geometric(0.25, n) - 1, alphabet - 1)
        lengths = huffman.code_lengths(np.bincount(symbols, minlength=alphabet))
        data, nbits = huffman.encode(symbols, lengths)
        decoded = huffman.decode(data, nbits, lengths, n)
        if not np.array_equal(decoded, symbols):
            raise AssertionError("Huffman round trip failed in the benchmark")
        ms = _median_ms(lambda data=data, nbits=nbits, lengths=lengths, n=n: huffman.decode(data, nbits, lengths, n))
        table.add(n, alphabet, int(lengths.max()), nbits / n, ms, n / ms / 1e3)
    table.note = "Geometric(0.25) symbols clipped to the alphabet; median of 5 decodes, round trip checked."
    return table


def _deep_compression(quick: bool, section: Section) -> None:
    from shrink.zoo import DigitsCNN, digits_data, digits_teacher

    teacher, data = digits_teacher(progress=False), digits_data()
    cfg = DeepCompression(sparsity=0.95, prune_epochs=4 if quick else 10, cluster_epochs=3)
    torch.manual_seed(0)
    model = shrink.deep_compress(teacher, cfg, train=data.train, progress=False)
    with tempfile.TemporaryDirectory() as d:
        fp32 = shrink.save(teacher, Path(d) / "fp32.shrink")
        dcz = Path(d) / "model.dcz"
        stats = save_compressed(model, dcz)
        fp32_bytes, dcz_bytes = os.path.getsize(fp32), os.path.getsize(dcz)
        decoded = load_compressed(dcz, DigitsCNN)
        exact = all(torch.equal(read_compressed(dcz)[k], v) for k, v in model.state_dict().items())
        fp32_ms = _median_ms(lambda: shrink.load(fp32, DigitsCNN))
        dcz_ms = _median_ms(lambda: read_compressed(dcz))
    base, acc, acc_decoded = _acc(teacher, data), _acc(model, data), _acc(decoded, data)
    s = summarize(stats)
    table = Table(
        "Deep Compression of the digits CNN (95% pruned, 5-bit conv / 4-bit fc shared weights)",
        ["model", "file", "bytes", "accuracy %", "read + decode ms"],
    )
    table.add("fp32", "shrink.save (safetensors)", fp32_bytes, base, fp32_ms)
    table.add("deep compression", ".dcz (Huffman-coded)", dcz_bytes, acc_decoded, dcz_ms)
    table.note = (
        f"{s['nonzero']:,} non-zero weights; cluster indices {s['index_bits_per_entry']:.3f} bits/entry "
        f"(entropy {s['index_entropy']:.3f}), gaps {s['gap_bits_per_entry']:.3f} bits/entry (entropy "
        f"{s['gap_entropy']:.3f}); the decoded model's accuracy equals the clustered model's: "
        f"{acc_decoded == acc}. Read + decode: median of 5 (.dcz: parse, CRC, Huffman decode of every layer; "
        "fp32: shrink.load into the model)."
    )
    section.tables.append(table)
    section.tables.append(_huffman_throughput(quick))
    within = all(
        st.index_bits / st.entries < st.index_entropy + 1 and st.gap_bits / st.entries < st.gap_entropy + 1
        for st in stats
    )
    section.targets += deep_compression_targets(fp32_bytes, dcz_bytes, base, acc_decoded, exact)
    # a Huffman code is always within 1 bit/symbol of the entropy (a theorem): shown, not judged
    section.facts.append(
        Fact(
            4,
            "Huffman streams vs empirical entropy (every layer" + (", all < H + 1)" if within else ": NOT < H + 1!)"),
            f"indices {s['index_bits_per_entry']:.2f} vs H {s['index_entropy']:.2f}; gaps "
            f"{s['gap_bits_per_entry']:.2f} vs H {s['gap_entropy']:.2f}",
        )
    )


def run(quick: bool) -> Section:
    section = Section(TITLE, intro="Every figure comes from this run; latency is torch eager with 2 threads.")
    _deep_compression(quick, section)
    _lowrank(quick, section)
    return section
