"""Shared fixtures: offline model hub, seeded RNG, one torch thread on request, the cached digits teacher."""

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


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (timing-based code paths, deterministic reductions); restored after."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def digits_teacher():
    from shrink.zoo import digits_teacher

    return digits_teacher(progress=False)


@pytest.fixture(scope="session")
def digits():
    from shrink.zoo import digits_data

    return digits_data()
