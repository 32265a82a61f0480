"""Digits: scikit-learn's bundled 8x8 handwritten digits (1,797 real images), a seeded split, a CNN teacher and a
smaller student.

The trained weights for seed 0 ship with the package (``shrink/zoo/weights``), so nothing is trained on first use;
``digits_teacher()`` returns the same weights every time, whatever the thread count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from shrink.data import DataBundle
from shrink.zoo.pretrained import load_or_train

__all__ = ["DigitsCNN", "DigitsStudent", "digits_split", "digits_data", "digits_teacher", "digits_student"]

SPLIT_SEED = 0
N_VAL, N_TEST = 180, 360


@dataclass(frozen=True)
class DigitsSplit:
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset


def digits_split() -> DigitsSplit:
    """Fixed split of all 1,797 images: 1,257 train / 180 val / 360 test, pixels scaled to [0, 1]."""
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    perm = torch.from_numpy(np.random.default_rng(SPLIT_SEED).permutation(len(y)))
    test, val, train = perm[:N_TEST], perm[N_TEST : N_TEST + N_VAL], perm[N_TEST + N_VAL :]
    return DigitsSplit(*(TensorDataset(x[i], y[i]) for i in (train, val, test)))


def digits_data(batch_size: int = 64, calibration_batches: int = 8, seed: int = 0) -> DataBundle:
    """Train/val/test loaders, calibration batches drawn from train, and an example input of batch 1."""
    split = digits_split()
    g = torch.Generator().manual_seed(seed)
    return DataBundle(
        train=DataLoader(split.train, batch_size=batch_size, shuffle=True, generator=g),
        val=DataLoader(split.val, batch_size=256),
        test=DataLoader(split.test, batch_size=512),
        calibration=DataLoader(split.train, batch_size=32, shuffle=False),
        calibration_batches=calibration_batches,
        example_inputs=split.train.tensors[0][:1],  # a training image: nothing scored is read before scoring
        metric="accuracy",
        name="digits",
    )


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class DigitsCNN(nn.Module):
    """Teacher: three conv-BN-ReLU blocks and a two-layer classifier (~95k parameters)."""

    def __init__(self, width: int = 32, hidden: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_block(1, w), *_block(w, 2 * w), nn.MaxPool2d(2), *_block(2 * w, 2 * w), nn.MaxPool2d(2)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * w * 4, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class DigitsStudent(DigitsCNN):
    """Student: the same layout at a quarter of the width (< 1/4 of the teacher's parameters)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(width=8, hidden=48, num_classes=num_classes)


def train_digits(
    model: nn.Module, epochs: int = 30, seed: int = 0, lr: float = 3e-3, progress: bool = True
) -> nn.Module:
    """Train a digits classifier with Adam, cosine LR and 1-pixel random shifts; returns the model in eval mode."""
    from shrink.train import fit

    torch.manual_seed(seed)
    data = digits_data(seed=seed)
    assert data.train is not None, "digits_data always has a train split"
    fit(model, data.train, epochs=epochs, lr=lr, augment=_random_shift, progress=progress, desc="train digits")
    return model.eval()


def _random_shift(x: torch.Tensor) -> torch.Tensor:
    dx, dy = torch.randint(-1, 2, (2,)).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


#: how each trained digits model is trained; part of its weights' key (see shrink.zoo.pretrained)
TRAINING: dict[str, dict[str, Any]] = {
    "digits_cnn": {"epochs": 30, "lr": 3e-3, "split_seed": SPLIT_SEED, "augment": "shift1"},
    "digits_student": {"epochs": 30, "lr": 3e-3, "split_seed": SPLIT_SEED, "augment": "shift1"},
}


def _pretrained(name: str, build: Callable[[], nn.Module], seed: int, progress: bool) -> nn.Module:
    """Shipped weights for seed 0; other seeds are trained once (on one thread) and cached by content."""
    settings = {**TRAINING[name], "seed": seed}
    torch.manual_seed(seed)
    model = build()

    def train(m: nn.Module) -> None:
        train_digits(m, epochs=settings["epochs"], seed=seed, lr=settings["lr"], progress=progress)

    return load_or_train(name, model, settings, train)


def digits_teacher(seed: int = 0, progress: bool = True) -> DigitsCNN:
    """The trained digits teacher (≥ 98% test accuracy). Seed 0 ships with the package; other seeds are trained on
    first use (``progress``: show the training bar) and cached."""
    return _pretrained("digits_cnn", DigitsCNN, seed, progress)  # type: ignore[return-value]


def digits_student(pretrained: bool = False, seed: int = 0, progress: bool = True) -> DigitsStudent:
    """The small student architecture, freshly initialised; ``pretrained=True`` gives it trained on hard labels
    (shipped for seed 0, else trained once and cached)."""
    if pretrained:
        return _pretrained("digits_student", DigitsStudent, seed, progress)  # type: ignore[return-value]
    torch.manual_seed(seed)
    return DigitsStudent()
