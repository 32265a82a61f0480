"""Per-layer sensitivity: how much the loss grows when only one layer is compressed.

* ``measured`` — apply the choice to that layer alone and measure, on a few batches, the KL divergence of its
  output distribution from the original model's (``criterion="kl"``, a fine-grained signal that needs no labels)
  or the change of the cross-entropy loss (``"ce"``).
* ``hessian`` — HAWQ-v2 (Dong et al., 2020): the average Hessian trace of the layer's weights, estimated with
  Hutchinson's method (``E[vᵀHv] = tr(H)`` for Rademacher ``v``), times the squared weight perturbation:
  ``ΔL ≈ ½ · tr(H_l) / n_l · ‖Q(W_l) − W_l‖²`` (second-order Taylor expansion at a trained minimum).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from shrink.autosearch.apply import apply_policy, prune_weight, quantize_weight
from shrink.data import call_model, split_batch
from shrink.errors import DataError
from shrink.hw.policy import LayerChoice
from shrink.quant.numerics.qparams import QParams

__all__ = [
    "mean_loss",
    "logits_of",
    "output_kl",
    "measured_sensitivity",
    "hutchinson_trace",
    "hessian_traces",
    "hessian_sensitivity",
]


def _batches(data: Iterable[Any], limit: int) -> list[Any]:
    out = []
    for i, batch in enumerate(data):
        if i >= limit:
            break
        out.append(batch)
    if not out:
        raise DataError("sensitivity: data yielded no batch")
    return out


def mean_loss(model: nn.Module, batches: Sequence[Any]) -> float:
    """Mean cross-entropy of ``model`` over labelled ``batches``."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            inputs, target = split_batch(batch)
            if target is None:
                raise DataError("sensitivity: needs labelled batches (inputs, target)")
            out = call_model(model, inputs)
            total += float(nn.functional.cross_entropy(out, target, reduction="sum"))
            count += len(target)
    return total / count


def logits_of(model: nn.Module, batches: Sequence[Any]) -> list[torch.Tensor]:
    model.eval()
    with torch.no_grad():
        return [call_model(model, split_batch(b)[0]) for b in batches]


def output_kl(model: nn.Module, batches: Sequence[Any], reference: Sequence[torch.Tensor]) -> float:
    """Mean KL(reference ‖ model) of the softmax outputs over ``batches`` (nats per example)."""
    total, count = 0.0, 0
    for logits, ref in zip(logits_of(model, batches), reference, strict=True):
        p_log = nn.functional.log_softmax(ref.float(), dim=-1)
        q_log = nn.functional.log_softmax(logits.float(), dim=-1)
        total += float(nn.functional.kl_div(q_log, p_log, log_target=True, reduction="sum"))
        count += ref.shape[0]
    return total / count


def measured_sensitivity(
    model: nn.Module,
    layers: Sequence[str],
    choices: Sequence[LayerChoice],
    data: Iterable[Any],
    *,
    batches: int = 4,
    input_qparams: dict[str, QParams] | None = None,
    criterion: str = "kl",
) -> dict[str, dict[LayerChoice, float]]:
    """Output KL (or loss increase, may be negative) when only ``layer`` gets ``choice``, for every layer/choice."""
    held = _batches(data, batches)
    loss: Callable[[nn.Module, Sequence[Any]], float]
    if criterion == "kl":
        reference = logits_of(model, held)
        base = 0.0

        def loss(m: nn.Module, b: Sequence[Any]) -> float:
            return output_kl(m, b, reference)
    elif criterion == "ce":
        loss, base = mean_loss, mean_loss(model, held)
    else:
        raise ValueError(f"criterion must be 'kl' or 'ce', got {criterion!r}")
    out: dict[str, dict[LayerChoice, float]] = {}
    for name in layers:
        out[name] = {}
        for choice in choices:
            if choice.bits >= 32 and choice.sparsity == 0:
                out[name][choice] = 0.0
                continue
            qp = {name: input_qparams[name]} if input_qparams and name in input_qparams else None
            out[name][choice] = loss(apply_policy(model, {name: choice}, input_qparams=qp), held) - base
    return out


def hutchinson_trace(
    loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], *, samples: int = 32, seed: int = 0
) -> list[float]:
    """Hutchinson estimates of ``tr(∂²L/∂p²)`` for each tensor in ``params`` (one Hessian block per tensor).

    Each sample draws Rademacher vectors ``v`` (±1) and computes ``vᵀ H v`` with one Hessian-vector product
    (double backward); the estimate is the sample mean.
    """
    gen = torch.Generator().manual_seed(seed)
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    sums = [0.0] * len(params)
    for _ in range(samples):
        vs = [(torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(p.dtype) for p in params]
        hvs = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True)
        for i, (v, hv) in enumerate(zip(vs, hvs, strict=True)):
            sums[i] += float((v * hv).sum())
    return [s / samples for s in sums]


def hessian_traces(
    model: nn.Module, layers: Sequence[str], data: Iterable[Any], *, batches: int = 2, samples: int = 32, seed: int = 0
) -> dict[str, float]:
    """Hutchinson trace of the cross-entropy Hessian w.r.t. each named layer's weight, on ``batches`` batches."""
    held = _batches(data, batches)
    modules = dict(model.named_modules())
    params = [modules[n].weight for n in layers]
    was_training = model.training
    model.eval()

    def loss_fn() -> torch.Tensor:
        total = torch.zeros(())
        count = 0
        for batch in held:
            inputs, target = split_batch(batch)
            total = total + nn.functional.cross_entropy(call_model(model, inputs), target, reduction="sum")
            count += len(target)
        return total / count

    try:
        traces = hutchinson_trace(loss_fn, params, samples=samples, seed=seed)
    finally:
        model.train(was_training)
    return dict(zip(layers, traces, strict=True))


def hessian_sensitivity(
    model: nn.Module, traces: dict[str, float], choices: Sequence[LayerChoice]
) -> dict[str, dict[LayerChoice, float]]:
    """HAWQ-v2 predicted loss increase ``½ · tr(H)/n · ‖Q(W) − W‖²`` for every layer in ``traces`` and choice."""
    modules = dict(model.named_modules())
    out: dict[str, dict[LayerChoice, float]] = {}
    for name, trace in traces.items():
        module = modules[name]
        w = module.weight.detach()
        out[name] = {}
        for choice in choices:
            delta = quantize_weight(prune_weight(module, choice.sparsity), choice.bits) - w
            out[name][choice] = 0.5 * max(trace, 0.0) / w.numel() * float((delta**2).sum())
    return out
