"""Search trials on a local Ray instance: at least two run concurrently, and a search runs through Ray.

Slow (Ray starts a local instance: ~20-30 s); bounded to one instance for the whole module."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import shrink
from shrink.api import Context
from shrink.autosearch.search import CompressionSearch, run_search
from shrink.autosearch.trials import rendezvous, run_trials, shutdown_ray

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _ray_instance():
    yield
    shutdown_ray()


def test_two_trials_run_concurrently_on_ray(tmp_path):
    # each trial waits for the other's mark: they meet only if both run at once, however late a loaded machine
    # starts the second worker (run one after another, the first gives up after two minutes and the test fails)
    meetings = [(str(tmp_path), "a", "b", 120.0), (str(tmp_path), "b", "a", 120.0)]
    (pid_a, met_a), (pid_b, met_b) = run_trials(rendezvous, None, meetings, backend="ray", parallel=2)
    assert pid_a != pid_b and os.getpid() not in (pid_a, pid_b)
    assert met_a and met_b


def test_search_trials_on_ray_match_in_process_trials():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = (x[:, :4].sum(1) > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    train = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 192, 32)]
    shrink.train.fit(model, train, epochs=10, lr=1e-2, progress=False)
    ctx = Context(example_inputs=x[:1], train=train, calibration=train, val=[(x[192:], y[192:])], progress=False)
    common = dict(
        profile="phone_npu",
        objective="bytes",
        bits=(4, 8, 32),
        widths=(1.0,),
        candidates=4,
        finetune_epochs=0,
        parallel=2,
    )
    on_ray, _ = run_search(model.eval(), CompressionSearch(backend="ray", **common), ctx)
    local, _ = run_search(model.eval(), CompressionSearch(backend="local", **common), ctx)
    assert [p.measured_metric for p in on_ray.points] == [p.measured_metric for p in local.points]
    assert on_ray.best == local.best
    assert sum(p.measured for p in on_ray.points) >= 2
