"""MNIST-1D (Greydanus & Kobak, "Scaling Down Deep Learning with MNIST-1D", 2020): a procedurally generated 1-D
digits set on which a linear model, an MLP, a CNN and a GRU land far apart, so compression methods separate.

The arrays come from the ``mnist1d`` package's generator (``make_dataset`` with the paper's default arguments: 5,000
signals of length 40, seed 42, 4,000 train / 1,000 test); nothing is downloaded. They are cached atomically as one
``.npz``. Validation is carved from the paper's training part, so the paper's test set stays the test set.

One test signal is a tenth of a point of accuracy on the paper's 1,000, and which signals happen to be drawn moves a
90%-accurate model by about a point. ``extra_test`` appends more signals from the same generator at another seed
(:data:`EXTRA_TEST_SEED`), so that comparisons over seeds are not dominated by that sampling noise.
"""

from __future__ import annotations

import hashlib
import io
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from shrink._cache import cache_dir
from shrink.data import DataBundle

__all__ = [
    "Mnist1dSplit",
    "mnist1d_arrays",
    "mnist1d_extra_test",
    "mnist1d_split",
    "mnist1d_data",
    "Batches1d",
    "N_VAL",
    "SPLIT_SEED",
    "EXTRA_TEST_SEED",
]

#: the paper's generator settings (mnist1d.data.get_dataset_args) minus the download URL, which is never used
PAPER_ARGS: dict[str, Any] = {
    "num_samples": 5000,
    "train_split": 0.8,
    "template_len": 12,
    "padding": [36, 60],
    "scale_coeff": 0.4,
    "max_translation": 48,
    "corr_noise_scale": 0.25,
    "iid_noise_scale": 2e-2,
    "shear_scale": 0.75,
    "shuffle_seq": False,
    "final_seq_length": 40,
    "seed": 42,
}
N_VAL = 500  # carved from the paper's 4,000 training signals: 3,500 train / 500 val / 1,000 test
SPLIT_SEED = 0
#: generator seed of the extra test signals: not the paper's 42, so they are new draws, none of them a training signal
EXTRA_TEST_SEED = 4242


def _generate(args: dict[str, Any]) -> dict[str, np.ndarray]:
    """Run the package's generator; it reseeds Python's and numpy's global RNGs, so their state is restored."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(ObjectView(dict(args)))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {
        "x": d["x"].astype(np.float32),
        "y": d["y"].astype(np.int64),
        "x_test": d["x_test"].astype(np.float32),
        "y_test": d["y_test"].astype(np.int64),
    }


def mnist1d_arrays(**overrides: Any) -> dict[str, np.ndarray]:
    """The generated arrays ``x``/``y`` (train) and ``x_test``/``y_test``; ``overrides`` change generator arguments
    (e.g. ``num_samples=20000`` for a larger set from the same generator). Cached per argument set."""
    from shrink._atomic import atomic_write_bytes

    unknown = set(overrides) - set(PAPER_ARGS)
    if unknown:
        known = ", ".join(sorted(PAPER_ARGS))
        raise ValueError(f"mnist1d_arrays: unknown generator argument(s) {sorted(unknown)}; known: {known}")
    args = PAPER_ARGS | overrides
    key = hashlib.sha256(repr(sorted(args.items())).encode()).hexdigest()[:12]
    path = cache_dir("zoo") / f"mnist1d-v1-{key}.npz"
    if path.exists():
        with np.load(path) as f:
            return {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    arrays = _generate(args)
    buf = io.BytesIO()
    np.savez(buf, x=arrays["x"], y=arrays["y"], x_test=arrays["x_test"], y_test=arrays["y_test"])
    atomic_write_bytes(path, buf.getvalue())
    return arrays


def mnist1d_extra_test(n: int) -> TensorDataset:
    """``n`` further signals from the paper's generator at seed :data:`EXTRA_TEST_SEED` (all of that run's signals,
    its train and test parts alike), for a larger test set than the paper's 1,000. The generator standardises each
    set by its own mean and standard deviation, so these signals are scaled by constants estimated from ``n``
    signals rather than the paper set's 5,000: the two differ only by the sampling error of those estimates."""
    if n <= 0 or n % 10:
        raise ValueError(f"mnist1d_extra_test: n must be a positive multiple of 10 (one tenth per digit), got {n}")
    a = mnist1d_arrays(num_samples=n, seed=EXTRA_TEST_SEED)
    x = torch.from_numpy(np.concatenate([a["x"], a["x_test"]]))
    return TensorDataset(x, torch.from_numpy(np.concatenate([a["y"], a["y_test"]])))


@dataclass(frozen=True)
class Mnist1dSplit:
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset


def mnist1d_split(paper_train: bool = False, extra_test: int = 0, **overrides: Any) -> Mnist1dSplit:
    """Train / validation / test: validation is a seeded ``N_VAL``-signal subset of the generator's training part
    (a fifth of it when a smaller set is generated); test is the generator's test part, untouched, followed by
    ``extra_test`` signals of :func:`mnist1d_extra_test` when that is not 0.
    ``paper_train=True`` is the paper's protocol: all of the generator's training part trains, validation is empty."""
    a = mnist1d_arrays(**overrides)
    n = len(a["y"])
    n_val = 0 if paper_train else min(N_VAL, n // 5)
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    x, y = torch.from_numpy(a["x"]), torch.from_numpy(a["y"])
    x_test, y_test = torch.from_numpy(a["x_test"]), torch.from_numpy(a["y_test"])
    if extra_test:
        x_more, y_more = mnist1d_extra_test(extra_test).tensors
        x_test, y_test = torch.cat([x_test, x_more]), torch.cat([y_test, y_more])
    return Mnist1dSplit(TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val]), TensorDataset(x_test, y_test))


class Batches1d:
    """Shuffled minibatches of a tensor dataset, re-drawn each epoch from ``generator`` (``fit`` reseeds it per
    epoch, so training is a function of the seed alone). Cheaper than a DataLoader for 40-float signals."""

    def __init__(self, data: TensorDataset, batch_size: int, seed: int = 0, shuffle: bool = True) -> None:
        self.x, self.y = data.tensors
        self.batch_size, self.shuffle = batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __iter__(self):  # noqa: ANN204
        n = len(self.y)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for i in range(0, n, self.batch_size):
            idx = order[i : i + self.batch_size]
            yield self.x[idx], self.y[idx]


def mnist1d_data(
    batch_size: int = 100,
    calibration_batches: int = 8,
    seed: int = 0,
    paper_train: bool = False,
    extra_test: int = 0,
    **overrides: Any,
) -> DataBundle:
    """Train (shuffled, seeded) / val / test batches, calibration batches from train, and a batch-1 example
    (``paper_train``, ``extra_test``: see :func:`mnist1d_split`)."""
    split = mnist1d_split(paper_train=paper_train, extra_test=extra_test, **overrides)
    return DataBundle(
        train=Batches1d(split.train, batch_size, seed=seed),
        val=DataLoader(split.val, batch_size=500),
        test=DataLoader(split.test, batch_size=1000),
        calibration=DataLoader(split.train, batch_size=32, shuffle=False),
        calibration_batches=calibration_batches,
        example_inputs=split.test.tensors[0][:1],
        metric="accuracy",
        name="mnist1d",
    )
