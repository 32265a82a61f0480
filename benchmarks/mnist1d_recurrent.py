"""Recurrent models on MNIST-1D (issue 16, item 4): the paper's GRU and an LSTM with attention pooling, fp32 vs
dynamic int8 by shrink (``Int8Dynamic(backend="torch")``) and by ``torch.ao.quantization.quantize_dynamic``:
accuracy, file size and batch-1 / batch-32 latency, all measured in this run. Each row names the layers that run
on int8 kernels and the ones that stay float."""

from __future__ import annotations

import copy
import io
import warnings

import torch
from torch import nn

import shrink
from benchmarks.common import Table, fmt_ms, latency
from shrink.eval.metrics import accuracy, predict
from shrink.quant import Int8Dynamic
from shrink.zoo.mnist1d import mnist1d_data
from shrink.zoo.mnist1d_models import MNIST1D_MODELS, mnist1d_model

__all__ = ["recurrent_table", "RECURRENT", "GRU_EPOCHS"]

#: the paper's GRU costs ~10x the CNN's training time on a CPU; it trains this many epochs (paper: 200)
GRU_EPOCHS = 100
#: (zoo name, epochs): the paper-protocol models the section's workers train (seed 0)
RECURRENT = (("gru", GRU_EPOCHS), ("lstm_attention", MNIST1D_MODELS["lstm_attention"][1]))


def _file_bytes(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def _kinds(model: nn.Module) -> str:
    """'int8: GRU, Linear x1; float: ...' from the module types actually in the model."""
    import torch.ao.nn.quantized.dynamic as nnqd

    int8, flt = [], []
    for m in model.modules():
        if isinstance(m, (nnqd.GRU, nnqd.LSTM, nnqd.Linear)):
            int8.append(type(m).__name__)
        elif isinstance(m, (nn.GRU, nn.LSTM, nn.Linear)):
            flt.append(type(m).__name__)

    def fmt(names: list[str]) -> str:
        return ", ".join(f"{n} x{names.count(n)}" for n in sorted(set(names))) or "none"

    return f"int8: {fmt(int8)}; float: {fmt(flt)}"


def _torch_ao(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates torch.ao quantization in favour of torchao
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {nn.GRU, nn.LSTM, nn.Linear}, dtype=torch.qint8
        )


def recurrent_table() -> Table:
    """One table: for each recurrent model, fp32 and the two dynamic int8 paths."""
    data = mnist1d_data()
    x = torch.cat([b[0] for b in data.test])
    x1, x32 = x[:1], x[:32]
    t = Table(
        "MNIST-1D recurrent models: dynamic int8 vs fp32 (seed 0, paper protocol, 1,000 test signals)",
        ["model", "variant", "test acc (%)", "file (bytes)", "b1 latency ms", "b32 latency ms", "layers"],
    )
    for name, epochs in RECURRENT:
        fp32 = mnist1d_model(name, seed=0, epochs=epochs, paper_train=True)
        variants = {
            "fp32 eager": fp32,
            "shrink int8_dynamic (torch)": shrink.quantize(fp32, Int8Dynamic(backend="torch"), progress=False),
            "torch.ao quantize_dynamic": _torch_ao(fp32),
        }
        for label, model in variants.items():
            with torch.inference_mode():
                acc = accuracy(*predict(model, data.test))
                b1 = latency(lambda m=model: m(x1), batch_size=1)
                b32 = latency(lambda m=model: m(x32), batch_size=32)
            t.add(name, label, acc, _file_bytes(model), fmt_ms(b1), fmt_ms(b32), _kinds(model))
    t.note = (
        "Latency: median (min–max) with the benchmark's threads, after warm-up, PyTorch eager. File: "
        "`torch.save(state_dict)`. Dynamic int8 quantizes weights ahead of time and activations per batch at run "
        "time; shrink's recurrent layers use PyTorch's per-tensor weight observer (its Linear layers per channel)."
    )
    return t
