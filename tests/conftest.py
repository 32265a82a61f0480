"""Shared fixtures: offline model hub, seeded RNG, the cached digits teacher."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digits_teacher():
    from shrink.zoo import digits_teacher

    return digits_teacher(progress=False)


@pytest.fixture(scope="session")
def digits():
    from shrink.zoo import digits_data

    return digits_data()
