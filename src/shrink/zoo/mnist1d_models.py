"""The MNIST-1D paper's four baselines (logistic regression, MLP, CNN, GRU), an LSTM with attention pooling, and
their training: trained on first use, cached, and identical whatever the caller's thread count.

Architectures follow the paper's reference code (``notebooks/models.py`` and ``get_model_args`` of
greydanus/mnist1d): an MLP with two 256-unit hidden layers and a residual second layer; a CNN of three 25-channel
convolutions (kernel 5 then 3, stride 2) and a linear head; a bidirectional GRU with 6 hidden units per direction
and a linear head on all 40 steps. The CNN's 1-D convolutions are written as ``Conv2d`` over a ``1 x 40`` image
(kernel ``1 x k``): the same arithmetic, and the layer type every shrink family (quantization, pruning,
binarization) handles. Training follows the paper's defaults too: Adam at lr 1e-2, batch 100, no weight decay,
constant learning rate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from shrink._cache import cache_dir

__all__ = [
    "Mnist1dLogistic",
    "Mnist1dMLP",
    "Mnist1dCNN",
    "Mnist1dGRU",
    "Mnist1dLSTMAttention",
    "MNIST1D_MODELS",
    "train_mnist1d",
    "mnist1d_model",
]


class Mnist1dLogistic(nn.Module):
    """Logistic regression: one linear layer on the 40 samples."""

    def __init__(self, length: int = 40, num_classes: int = 10) -> None:
        super().__init__()
        self.linear = nn.Linear(length, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class Mnist1dMLP(nn.Module):
    """The paper's MLP: 40 -> 256 -> 256 (residual) -> 10, ReLU."""

    def __init__(self, length: int = 40, hidden: int = 256, num_classes: int = 10) -> None:
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(length, hidden), nn.Linear(hidden, hidden)
        self.linear3 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear1(x.flatten(1)).relu()
        h = h + self.linear2(h).relu()
        return self.linear3(h)


class Mnist1dCNN(nn.Module):
    """The paper's CNN: three ReLU convolutions (``channels`` wide, stride 2) and a linear head; input ``(N, 40)``.
    ``batchnorm=True`` puts a BatchNorm after each convolution (not in the paper; data-free methods such as ZeroQ
    read its statistics)."""

    def __init__(self, channels: int = 25, length: int = 40, num_classes: int = 10, batchnorm: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, (1, 5), stride=(1, 2), padding=(0, 1), bias=not batchnorm)
        self.conv2 = nn.Conv2d(channels, channels, (1, 3), stride=(1, 2), padding=(0, 1), bias=not batchnorm)
        self.conv3 = nn.Conv2d(channels, channels, (1, 3), stride=(1, 2), padding=(0, 1), bias=not batchnorm)
        self.bn1, self.bn2, self.bn3 = (nn.BatchNorm2d(channels) if batchnorm else None for _ in range(3))
        n = length
        for k in (5, 3, 3):
            n = (n + 2 - k) // 2 + 1
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(channels * n, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], 1, 1, x.shape[-1])
        for conv, bn, relu in ((self.conv1, self.bn1, self.relu1), (self.conv2, self.bn2, self.relu2),
                               (self.conv3, self.bn3, self.relu3)):  # fmt: skip
            h = conv(h)
            h = relu(bn(h) if bn is not None else h)
        return self.linear(self.flatten(h))


class Mnist1dGRU(nn.Module):
    """The paper's GRU: bidirectional, ``hidden`` units per direction, linear head on every step's output."""

    def __init__(self, hidden: int = 6, length: int = 40, num_classes: int = 10) -> None:
        super().__init__()
        self.gru = nn.GRU(1, hidden, batch_first=True, bidirectional=True)
        self.linear = nn.Linear(2 * hidden * length, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x.reshape(x.shape[0], -1, 1))
        return self.linear(out.flatten(1))


class Mnist1dLSTMAttention(nn.Module):
    """An LSTM with attention pooling (not in the paper): a learned score per step, softmax over time, the weighted
    sum of the LSTM outputs into a linear head."""

    def __init__(self, hidden: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.lstm = nn.LSTM(1, hidden, batch_first=True)
        self.score = nn.Linear(hidden, 1)
        self.linear = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x.reshape(x.shape[0], -1, 1))
        weights = torch.softmax(self.score(out), dim=1)
        return self.linear((weights * out).sum(1))


#: name -> (factory, epochs). The paper trains 8,000 steps of batch 100 (200 epochs of its 4,000 signals); the
#: recurrent models get fewer epochs, their steps being ~10x slower on a CPU.
MNIST1D_MODELS: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "logistic": (Mnist1dLogistic, 200),
    "mlp": (Mnist1dMLP, 200),
    "cnn": (Mnist1dCNN, 200),
    "cnn_bn": (lambda: Mnist1dCNN(batchnorm=True), 200),
    "gru": (Mnist1dGRU, 60),
    "lstm_attention": (Mnist1dLSTMAttention, 60),
}
LR, BATCH = 1e-2, 100


@contextmanager
def one_thread() -> Iterator[None]:
    """One torch thread inside the block (restored after): float sums then have one order, so training gives the
    same weights whatever thread count the caller set."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def train_mnist1d(
    model: nn.Module,
    epochs: int,
    seed: int = 0,
    lr: float = LR,
    schedule: str = "constant",
    progress: bool = False,
    mixup: bool = False,
    **data_overrides: Any,
) -> nn.Module:
    """Train ``model`` in place on the MNIST-1D training split (paper's optimizer settings, shuffled batches drawn
    from ``seed``; ``mixup`` blends the training signals in pairs) with one thread; returns it in eval mode."""
    from shrink.train import fit
    from shrink.zoo.mnist1d import mnist1d_data

    data = mnist1d_data(batch_size=BATCH, seed=seed, **data_overrides)
    assert data.train is not None, "mnist1d_data always has a train split"
    with one_thread():
        torch.manual_seed(seed)
        fit(
            model,
            data.train,
            epochs=epochs,
            lr=lr,
            schedule=schedule,
            mixup=mixup,
            progress=progress,
            desc="train mnist1d",
        )
    return model.eval()


def mnist1d_model(
    name: str,
    seed: int = 0,
    epochs: int | None = None,
    paper_train: bool = False,
    progress: bool = False,
    mixup: bool = False,
) -> nn.Module:
    """A trained MNIST-1D model by name (see ``MNIST1D_MODELS``): initialised from ``seed``, trained on first use and
    cached; the same weights every call for the same arguments. ``paper_train=True`` trains on all 4,000 of the
    paper's training signals (its protocol, no validation held out) instead of the 3,500-signal train split.
    ``mixup=True`` is the stronger recipe: mixup on a cosine-decayed learning rate instead of the paper's constant
    one (use more epochs: it regularises)."""
    from safetensors.torch import load_file, save

    from shrink._atomic import atomic_write_bytes

    if name not in MNIST1D_MODELS:
        raise ValueError(f"mnist1d_model: unknown model {name!r}; known: {', '.join(MNIST1D_MODELS)}")
    build, default_epochs = MNIST1D_MODELS[name]
    epochs = default_epochs if epochs is None else epochs
    split = "-paper" if paper_train else ""
    recipe = "-mixup-cosine" if mixup else ""
    path = cache_dir("zoo") / f"mnist1d_{name}-v1-seed{seed}-e{epochs}{split}{recipe}.safetensors"
    torch.manual_seed(seed)
    model = build()
    if path.exists():
        try:
            model.load_state_dict(load_file(str(path)))
            return model.eval()
        except RuntimeError:  # weights of an earlier architecture under this name: train the current one anew
            torch.manual_seed(seed)
            model = build()
    schedule = "cosine" if mixup else "constant"
    train_mnist1d(
        model, epochs=epochs, seed=seed, schedule=schedule, progress=progress, mixup=mixup, paper_train=paper_train
    )
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in model.state_dict().items()}))
    return model
