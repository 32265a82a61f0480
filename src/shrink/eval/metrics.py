"""Task metrics: classification accuracy and embedding fidelity (cosine, nearest-neighbour agreement)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from shrink.data import aligned_target, call_model, evaluation_mode, split_batch
from shrink.errors import ConfigError, DataError

__all__ = [
    "predict",
    "select_output",
    "runtime_output",
    "evaluation_mode",
    "OUTPUT_KEYS",
    "accuracy",
    "embedding_fidelity",
    "bootstrap_interval",
]


#: where a model returns a mapping (a transformers ``ModelOutput`` or a dict), the first of these keys present is scored
OUTPUT_KEYS = ("logits", "sentence_embedding", "last_hidden_state")

#: ``output=`` of :func:`predict` / :func:`shrink.evaluate`: a key of a mapping output or an index of a tuple output
OutputChoice = str | int | None


def select_output(out: Any, output: OutputChoice = None) -> torch.Tensor:
    """The tensor of a model's output that is scored.

    A tensor is itself, whatever ``output`` says. A mapping (transformers ``ModelOutput``, dict) gives its
    ``output`` key (or, for an int, its ``output``-th value); by default the first of :data:`OUTPUT_KEYS` present
    (``logits``, a sentence-transformers ``sentence_embedding``, ``last_hidden_state``), else its first tensor
    value. A tuple or list gives its ``output``-th item (default the
    first); a chosen tuple or mapping is resolved again by the default rule. Other outputs (numpy arrays) are
    converted with ``torch.as_tensor``.
    """
    if isinstance(out, torch.Tensor):  # ``output`` does not apply (an ONNX model has picked it already)
        return out
    if isinstance(out, Mapping):
        kind = type(out).__name__
        if isinstance(output, str):
            if output not in out:
                raise ConfigError(f"output={output!r}: the model's {kind} has no such key (keys: {list(out)})")
            chosen = out[output]
        elif isinstance(output, int):
            chosen = _nth(list(out.values()), output, kind)
        else:
            key = next((k for k in OUTPUT_KEYS if isinstance(out.get(k), torch.Tensor)), None)
            key = key or next((k for k, v in out.items() if isinstance(v, torch.Tensor)), None)
            if key is None:
                raise DataError(f"the model's {kind} holds no tensor to score (keys: {list(out)})")
            chosen = out[key]
    elif isinstance(out, (tuple, list)):
        if isinstance(output, str):
            raise ConfigError(f"output={output!r}: the model returns a {type(out).__name__}; pass an index")
        chosen = _nth(list(out), output or 0, type(out).__name__)
    else:
        chosen = out
    if isinstance(chosen, (tuple, list, Mapping)):
        return select_output(chosen)
    try:
        return torch.as_tensor(chosen)
    except (TypeError, RuntimeError, ValueError):
        raise DataError(f"the model's scored output is a {type(chosen).__name__}, not a tensor") from None


def _nth(items: list[Any], index: int, kind: str) -> Any:
    if isinstance(index, bool) or not -len(items) <= index < len(items):
        raise ConfigError(f"output={index!r}: the model's {kind} has {len(items)} items")
    return items[index]


def runtime_output(names: list[str], output: OutputChoice = None) -> str | int:
    """Which output of a runtime graph (ONNX, outputs named as the torch model's keys) to score, by the rule
    :func:`select_output` applies to the torch model: ``output`` by name or index; by default the first of
    :data:`OUTPUT_KEYS` among the graph's outputs, else its first. A graph with one output gives that one whatever
    ``output`` says (a file whose outputs were not named after the model's, as a torch tensor output would)."""
    if len(names) == 1:
        return 0
    if output is None:
        return next((k for k in OUTPUT_KEYS if k in names), 0)
    return output


def predict(
    model: Callable[..., Any], data: Iterable[Any], output: OutputChoice = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenated outputs (and targets, if labelled) of ``model`` over ``data``; the scored tensor of each
    output is chosen by ``output`` (see :func:`select_output`). A module runs in eval mode and is left in the mode
    and with the buffers it had (:func:`evaluation_mode`)."""
    outs, targets = [], []
    with evaluation_mode([model]), torch.inference_mode():
        for batch in data:
            inputs, target = split_batch(batch)
            if isinstance(model, torch.nn.Module):
                out = call_model(model, inputs)
            elif hasattr(model, "output_names"):  # a runtime graph (ONNX) picks its named output
                out = model(inputs, output=runtime_output(model.output_names, output))
            else:
                out = model(inputs)
            outs.append(select_output(out, output).float())
            if target is not None:
                targets.append(target)
    if not outs:
        raise DataError("evaluation data yielded no batch")
    return torch.cat(outs), (torch.cat(targets) if targets else None)


def accuracy(logits: torch.Tensor, targets: torch.Tensor | None) -> float:
    """Top-1 accuracy in percent."""
    if targets is None:
        raise DataError("accuracy needs labelled evaluation data (inputs, target)")
    if logits.dim() < 2 or logits.shape[-1] < 2:
        raise DataError(
            f"accuracy needs one score per class, but the model's output has shape {tuple(logits.shape)} (one value "
            "per sample): a regressor is scored with metric='mse'; a binary classifier needs two logits"
        )
    if targets.is_floating_point() and not torch.equal(targets, targets.round()):
        raise DataError(
            f"accuracy needs class labels, got non-integer float targets of shape {tuple(targets.shape)}: for values "
            "to regress, score with metric='mse'"
        )
    return float((logits.argmax(-1) == targets).float().mean() * 100)


def regression_errors(outputs: torch.Tensor, targets: torch.Tensor | None) -> dict[str, float]:
    """Mean squared and mean absolute error of ``outputs`` against float ``targets`` (a ``(batch,)`` target is
    also taken for a ``(batch, 1)`` output)."""
    if targets is None:
        raise DataError("metric 'mse' needs evaluation data of (inputs, target)")
    outputs = outputs.float()
    error = outputs - aligned_target(targets, outputs, "metric 'mse'")
    return {"mse": float(error.pow(2).mean()), "mae": float(error.abs().mean())}


def embedding_fidelity(reference: torch.Tensor, embeddings: torch.Tensor) -> dict[str, float]:
    """Mean/min cosine of each embedding to its reference and nearest-neighbour agreement (percent): for each item,
    is its nearest other item (by cosine) the same under both embeddings?"""
    if reference.shape != embeddings.shape:
        raise DataError(f"embedding shapes differ: reference {tuple(reference.shape)}, got {tuple(embeddings.shape)}")
    ref = torch.nn.functional.normalize(reference.float(), dim=-1)
    emb = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    cos = (ref * emb).sum(-1)

    def nearest(e: torch.Tensor) -> torch.Tensor:
        sim = e @ e.T
        sim.fill_diagonal_(-float("inf"))
        return sim.argmax(-1)

    same = (nearest(ref) == nearest(emb)).float()
    low, high = bootstrap_interval(same)
    return {
        "cos_mean": float(cos.mean()),
        "cos_min": float(cos.min()),
        "nn_agreement": float(same.mean() * 100),
        "nn_agreement_low": low * 100,
        "nn_agreement_high": high * 100,
    }


def bootstrap_interval(
    values: torch.Tensor, level: float = 0.95, draws: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement ``draws`` times, with a
    fixed seed so the same values always give the same interval)."""
    if values.numel() == 0:
        raise DataError("bootstrap_interval: no values")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, values.numel(), (draws, values.numel()), generator=gen)
    means = values.flatten().float()[idx].mean(dim=1)
    tail = (1 - level) / 2
    return float(torch.quantile(means, tail)), float(torch.quantile(means, 1 - tail))
