"""Calibration / evaluation data: any iterable of batches, plus an optional transform.

A batch is a tensor (inputs only), a ``(inputs, target)`` tuple, or a dict of tensors (transformers-style).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from shrink.errors import ConfigError, DataError, ModelError

__all__ = [
    "Batches",
    "split_batch",
    "check_finite",
    "check_model_finite",
    "check_like",
    "first_batch",
    "logits_of",
    "evaluation_mode",
]


class Batches:
    """Re-iterable view of user data with an optional per-batch transform and a batch limit.

    Every batch is checked as it is read: its inputs must be finite and, when ``like`` (an example input) is given,
    have the same structure, rank and kind of dtype. Errors name ``name`` and the batch number.
    """

    def __init__(
        self,
        data: Iterable[Any],
        transform: Callable[[Any], Any] | None = None,
        limit: int | None = None,
        *,
        name: str = "data",
        like: Any = None,
    ) -> None:
        if data is None:
            raise DataError(f"{name} is None: pass an iterable of batches (a DataLoader, a list of tensors, ...)")
        if isinstance(data, (torch.Tensor, str, bytes)) or not isinstance(data, Iterable):
            raise DataError(f"{name} must be an iterable of batches, got {type(data).__name__}")
        if limit is not None and limit < 1:
            raise DataError(f"{name}: batch limit must be >= 1, got {limit}")
        self.data, self.transform, self.limit, self.name, self.like = data, transform, limit, name, like

    def __iter__(self) -> Iterator[Any]:
        n = 0
        for batch in self.data:
            if self.limit is not None and n >= self.limit:
                return
            batch = self.transform(batch) if self.transform else batch
            inputs, _ = split_batch(batch)
            where = f"{self.name} batch {n + 1}"
            check_finite(inputs, f"{where} inputs")
            if self.like is not None:
                check_like(inputs, self.like, where)
            yield batch
            n += 1
        if n == 0:
            raise DataError(f"{self.name} yielded no batch (empty data)")


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor {tuple(x.shape)} {str(x.dtype).removeprefix('torch.')}"
    if isinstance(x, dict):
        return "dict(" + ", ".join(f"{k}={_describe(v)}" for k, v in x.items()) + ")"
    if isinstance(x, (tuple, list)):
        return "(" + ", ".join(_describe(v) for v in x) + ")"
    return type(x).__name__


def check_like(x: Any, example: Any, where: str) -> None:
    """Raise DataError unless ``x`` has ``example``'s structure, tensor ranks and dtype kinds (sizes may differ)."""

    def same(a: Any, b: Any) -> bool:
        if isinstance(b, torch.Tensor):
            return isinstance(a, torch.Tensor) and a.dim() == b.dim() and a.is_floating_point() == b.is_floating_point()
        if isinstance(b, dict):
            return isinstance(a, dict) and set(a) == set(b) and all(same(a[k], b[k]) for k in b)
        if isinstance(b, (tuple, list)):
            return isinstance(a, (tuple, list)) and len(a) == len(b) and all(map(same, a, b))
        return True

    if not same(x, example):
        raise DataError(f"{where}: inputs {_describe(x)} do not match the model's example inputs {_describe(example)}")


def split_batch(batch: Any) -> tuple[Any, Any]:
    """``(inputs, target)`` of a batch; target is None for unlabelled data. A mapping of inputs that is not a dict
    (a tokenizer's ``BatchEncoding``) is returned as a plain dict."""
    if isinstance(batch, Mapping) and not isinstance(batch, dict):
        return dict(batch), None
    if isinstance(batch, (tuple, list)):
        if len(batch) == 2:
            return batch[0], batch[1]
        if len(batch) == 1:
            return batch[0], None
        raise DataError(f"a batch tuple must be (inputs,) or (inputs, target), got {len(batch)} items")
    return batch, None


def first_batch(data: Iterable[Any]) -> Any:
    for batch in data:
        return batch
    raise DataError("data yielded no batch (empty calibration/evaluation data)")


def named_tensors(x: Any, where: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in ``x`` (a tensor, or tensors nested in dicts / tuples / lists) with its path under ``where``."""
    if isinstance(x, torch.Tensor):
        yield where, x
    elif isinstance(x, Mapping):
        for k, v in x.items():
            yield from named_tensors(v, f"{where}[{k!r}]")
    elif isinstance(x, (tuple, list)):
        for i, v in enumerate(x):
            yield from named_tensors(v, f"{where}[{i}]")


def check_finite(x: Any, where: str) -> None:
    """Raise DataError naming ``where`` if a tensor (or tensors in a dict/tuple) holds NaN or Inf."""
    for name, t in named_tensors(x, where):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise DataError(f"{name}: contains NaN or Inf")


def check_not_meta(model: torch.nn.Module, where: str) -> None:
    """Raise ModelError naming the first parameter or buffer of ``model`` on the meta device (a shape without
    values: the model was built without loading its weights)."""
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in named:
            if t.is_meta:
                raise ModelError(
                    f"{where}: {kind} {name!r} is on the meta device (shapes without values); load real weights "
                    "first, e.g. model.to_empty(device='cpu') then load_state_dict(...)"
                )


def check_model_finite(model: torch.nn.Module, where: str) -> None:
    """Raise ModelError naming the first floating-point parameter or buffer of ``model`` that holds NaN or Inf."""
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in named:
            if t.is_floating_point() and not t.is_meta and not bool(torch.isfinite(t.detach()).all()):
                bad = "NaN" if bool(torch.isnan(t.detach()).any()) else "Inf"
                raise ModelError(f"{where}: {kind} {name!r} contains {bad}; shrink needs a model with finite weights")


@contextmanager
def evaluation_mode(models: Iterable[Any]) -> Iterator[None]:
    """Put every ``torch.nn.Module`` among ``models`` in eval mode for the block; afterwards each of their
    submodules gets its own training flag back and every buffer its values (also on error)."""
    modules = [m for m in models if isinstance(m, torch.nn.Module)]
    flags = [[(sub, sub.training) for sub in m.modules()] for m in modules]
    with torch.no_grad():
        # opaque prepacked runtime weights (oneDNN) are neither readable nor changed by a forward: left out
        buffers = [[(b, b.detach().clone()) for b in m.buffers() if not (b.is_meta or b.is_mkldnn)] for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        with torch.no_grad():
            for saved in buffers:
                for buf, value in saved:
                    if buf.shape != value.shape:
                        buf.data = value
                    elif not torch.equal(buf, value):
                        buf.copy_(value)
        for per_model in flags:
            for sub, training in per_model:
                sub.training = training


def aligned_target(target: torch.Tensor, out: torch.Tensor, where: str) -> torch.Tensor:
    """``target`` as float values shaped like ``out`` (a ``(batch,)`` target is taken for a ``(batch, 1)`` output);
    DataError naming ``where`` if the shapes differ otherwise."""
    if target.shape != out.shape and target.shape + (1,) == out.shape:
        target = target.unsqueeze(-1)
    if target.shape != out.shape:
        raise DataError(
            f"{where}: the model's output has shape {tuple(out.shape)}, the target {tuple(target.shape)}; they must "
            "match (a (batch,) target is also taken for a (batch, 1) output)"
        )
    return target.to(out.dtype)


__all__.append("aligned_target")


def logits_of(output: Any) -> torch.Tensor:
    """A model output as a tensor: the tensor itself or a ``.logits`` / ``last_hidden_state`` attribute."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    for attr in ("logits", "last_hidden_state"):
        value = getattr(output, attr, None)
        if isinstance(value, torch.Tensor):
            return value
    raise DataError(f"cannot take logits from a model output of type {type(output).__name__}")


def call_model(model: torch.nn.Module, inputs: Any) -> Any:
    """Call a model on a batch's inputs: a dict is passed as keyword arguments, a tuple as positional ones.

    If the model fails, the error carries a note describing the inputs (mis-shaped data is the usual cause).
    """
    try:
        if isinstance(inputs, Mapping):
            return model(**inputs)
        if isinstance(inputs, (tuple, list)):
            return model(*inputs)
        return model(inputs)
    except Exception as exc:
        exc.add_note(f"shrink: {type(model).__name__} failed on inputs {_describe(inputs)}")
        raise


__all__.append("call_model")


#: the task metrics :func:`shrink.evaluate` scores: top-1 accuracy (classifiers), fidelity to a reference model's
#: embeddings, perplexity (causal language models), mean squared error against float targets (regressors; the
#: mean absolute error beside it)
METRICS = ("accuracy", "fidelity", "perplexity", "mse")
__all__.append("METRICS")


class DataBundle:
    """The data a recipe or benchmark works on: labelled train/val/test iterables, calibration batches, an example
    input, and the task metric (one of :data:`METRICS`: "accuracy" for classifiers, "fidelity" for embedding models,
    "mse" for regressors).

    Only ``test`` and ``example_inputs`` are required; ``train``, ``val`` and ``calibration`` default to None, and
    a recipe checks before its first stage that every stage finds the data it needs."""

    def __init__(
        self,
        *,
        test: Iterable[Any],
        example_inputs: Any,
        train: Iterable[Any] | None = None,
        val: Iterable[Any] | None = None,
        calibration: Iterable[Any] | None = None,
        metric: str = "accuracy",
        calibration_batches: int | None = None,
        name: str = "data",
    ) -> None:
        self.train, self.val, self.test = train, val, test
        self.calibration = (
            Batches(calibration, limit=calibration_batches, name="calibration data", like=example_inputs)
            if calibration is not None
            else None
        )
        if metric not in METRICS:
            raise ConfigError(f"{name}: metric must be one of {METRICS}, got {metric!r}")
        self.example_inputs, self.metric, self.name = example_inputs, metric, name


__all__.append("DataBundle")


class LanguageData(DataBundle):
    """Token windows for a causal language model (metric ``"perplexity"``): ``windows`` [n, length] are scored by
    perplexity, ``prompts`` (1-D token ids) are continued greedily for ``new_tokens`` tokens and compared with the
    reference model's continuation, ``decode`` turns token ids back into text (the report's samples).
    ``calibration`` windows feed the stages that calibrate; the example input (latency: one prefill) is the first
    window unless given."""

    def __init__(
        self,
        *,
        windows: torch.Tensor,
        prompts: list[torch.Tensor],
        decode: Callable[[torch.Tensor], str],
        calibration: torch.Tensor | None = None,
        example_inputs: Any = None,
        new_tokens: int = 32,
        name: str = "text",
    ) -> None:
        if windows.dim() != 2 or windows.shape[1] < 2 or windows.dtype != torch.long:
            raise DataError(f"{name}: windows must be [n, length>=2] token ids (int64), got {tuple(windows.shape)}")
        if not prompts or any(p.dim() != 1 or p.numel() == 0 for p in prompts):
            raise DataError(f"{name}: prompts must be a non-empty list of 1-D token id tensors")
        example = {"input_ids": windows[:1], "use_cache": False} if example_inputs is None else example_inputs
        batches = None if calibration is None else [{"input_ids": w[None], "use_cache": False} for w in calibration]
        super().__init__(test=windows, example_inputs=example, calibration=batches, metric="perplexity", name=name)
        self.windows, self.prompts, self.decode, self.new_tokens = windows, list(prompts), decode, new_tokens


__all__.append("LanguageData")


@contextmanager
def forward_pre_hooks(hooks: Mapping[torch.nn.Module, Callable[..., Any]]) -> Iterator[None]:
    """Attach a forward pre-hook to each layer for the ``with`` block; removed afterwards, also on error."""
    handles = [layer.register_forward_pre_hook(hook) for layer, hook in hooks.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


__all__.append("forward_pre_hooks")


def feed_inputs(
    model: torch.nn.Module,
    data: Iterable[Any],
    limit: int,
    pre_hooks: dict[str, Callable[[torch.nn.Module, tuple[Any, ...]], Any]],
) -> int:
    """Run the inputs of up to ``limit`` batches of ``data`` through ``model`` under ``no_grad`` with a forward
    pre-hook on each named layer (hooks removed afterwards, also on error); returns the number of batches."""
    n = 0
    with forward_pre_hooks({model.get_submodule(name): hook for name, hook in pre_hooks.items()}), torch.no_grad():
        for batch in data:
            if n >= limit:
                break
            call_model(model, split_batch(batch)[0])
            n += 1
    return n


__all__.append("feed_inputs")


def shared_input_groups(
    model: torch.nn.Module, names: Iterable[str], data: Iterable[Any], limit: int | None = None
) -> list[list[str]]:
    """Groups (two or more, in call order) of the named layers that receive the very same input tensor object in
    every forward over (up to ``limit`` batches of) ``data`` — e.g. an attention block's query / key / value
    projections. Inputs are told apart by identity within each forward (holding them until it ends, so a freed
    tensor's reused memory cannot make two inputs look alike)."""
    tags: dict[str, list[int]] = {n: [] for n in names}
    order: dict[str, int] = {}
    alive: dict[int, tuple[torch.Tensor, int]] = {}  # id -> (tensor, tag); holding the tensor keeps its id unique
    fresh = itertools.count()

    def hook(name: str) -> Callable[..., None]:
        def record(mod: torch.nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0]
            if id(x) not in alive:
                alive[id(x)] = (x, next(fresh))
            tags[name].append(alive[id(x)][1])
            order.setdefault(name, len(order))

        return record

    hooks = {n: hook(n) for n in tags}
    for batch in itertools.islice(data, limit):  # one forward at a time: identities are compared within it
        feed_inputs(model, [batch], 1, hooks)
        alive.clear()
    groups: dict[tuple[int, ...], list[str]] = {}
    for name, seq in tags.items():
        if seq:
            groups.setdefault(tuple(seq), []).append(name)
    return [sorted(g, key=order.__getitem__) for g in groups.values() if len(g) > 1]


__all__.append("shared_input_groups")
