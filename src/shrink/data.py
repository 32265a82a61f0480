"""Calibration / evaluation data: any iterable of batches, plus an optional transform.

A batch is a tensor (inputs only), a ``(inputs, target)`` tuple, or a dict of tensors (transformers-style).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from shrink.errors import DataError

__all__ = ["Batches", "split_batch", "check_finite", "first_batch"]


class Batches:
    """Re-iterable view of user data with an optional per-batch transform and a batch limit."""

    def __init__(
        self, data: Iterable[Any], transform: Callable[[Any], Any] | None = None, limit: int | None = None
    ) -> None:
        if data is None:
            raise DataError("data is None: pass an iterable of batches (a DataLoader, a list of tensors, ...)")
        if not isinstance(data, Iterable):
            raise DataError(f"data must be an iterable of batches, got {type(data).__name__}")
        self.data, self.transform, self.limit = data, transform, limit

    def __iter__(self) -> Iterator[Any]:
        n = 0
        for batch in self.data:
            if self.limit is not None and n >= self.limit:
                return
            yield self.transform(batch) if self.transform else batch
            n += 1
        if n == 0:
            raise DataError("data yielded no batch (empty calibration/evaluation data)")


def split_batch(batch: Any) -> tuple[Any, Any]:
    """``(inputs, target)`` of a batch; target is None for unlabelled data."""
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


def check_finite(x: Any, where: str) -> None:
    """Raise DataError naming ``where`` if a tensor (or tensors in a dict/tuple) holds NaN or Inf."""
    if isinstance(x, torch.Tensor):
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise DataError(f"{where}: contains NaN or Inf")
    elif isinstance(x, dict):
        for k, v in x.items():
            check_finite(v, f"{where}[{k!r}]")
    elif isinstance(x, (tuple, list)):
        for i, v in enumerate(x):
            check_finite(v, f"{where}[{i}]")


def call_model(model: torch.nn.Module, inputs: Any) -> Any:
    """Call a model on a batch's inputs: a dict is passed as keyword arguments, a tuple as positional ones."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


__all__.append("call_model")


class DataBundle:
    """The data a recipe or benchmark works on: labelled train/val/test iterables, calibration batches, an example
    input, and the task metric ("accuracy" for classifiers, "fidelity" for embedding models)."""

    def __init__(
        self,
        *,
        train: Iterable[Any] | None,
        val: Iterable[Any] | None,
        test: Iterable[Any],
        calibration: Iterable[Any] | None,
        example_inputs: Any,
        metric: str = "accuracy",
        calibration_batches: int | None = None,
        name: str = "data",
    ) -> None:
        self.train, self.val, self.test = train, val, test
        self.calibration = Batches(calibration, limit=calibration_batches) if calibration is not None else None
        self.example_inputs, self.metric, self.name = example_inputs, metric, name


__all__.append("DataBundle")
