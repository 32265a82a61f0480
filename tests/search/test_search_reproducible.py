"""Same seed, same search: twice in one process and in a fresh process, with a shuffling DataLoader whose
generator the caller has already advanced; in-process trials leave the caller's threads and RNG states as they were.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap

import numpy as np
import torch

from shrink.autosearch.trials import listed, run_trials

TASK = textwrap.dedent("""
    import json, sys
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    import shrink
    from shrink.api import Context
    from shrink.autosearch.search import CompressionSearch, run_search

    def task():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(384, 16, generator=g)
        y = (x[:, :4].sum(1) > 0).long() + 2 * (x[:, 4:8].sum(1) > 0).long()
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 4))
        fixed = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
        shrink.train.fit(model, fixed, epochs=8, lr=1e-2, progress=False)
        loader = DataLoader(TensorDataset(x[:256], y[:256]), batch_size=32, shuffle=True,
                            generator=torch.Generator().manual_seed(1))
        return model.eval(), loader, [(x[256:], y[256:])]

    def search(model, loader, val, seed=0):
        cfg = CompressionSearch(profile="phone_npu", objective="bytes", bits=(8, 32), widths=(1.0, 0.5),
                                candidates=3, backend="local", tolerance=100.0, finetune_epochs=1, lr=5e-2,
                                refine=0, uniform=False, seed=seed)
        ctx = Context(example_inputs=val[0][0][:1], train=loader, calibration=loader, val=val, progress=False)
        result, _ = run_search(model, cfg, ctx)
        return [[p.policy, p.measured_metric] for p in result.points]

    if __name__ == "__main__":
        torch.set_num_threads(1)
        model, loader, val = task()
        print(json.dumps(search(model, loader, val)))
""")


def _module(tmp_path):
    path = tmp_path / "search_task.py"
    path.write_text(TASK)
    sys.path.insert(0, str(tmp_path))
    try:
        import search_task  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    return path, search_task


def test_same_seed_same_search_in_one_process_and_across_processes(tmp_path, one_thread):
    path, task = _module(tmp_path)
    model, loader, val = task.task()
    first = task.search(model, loader, val)
    next(iter(loader))  # the caller's loader moves on between the two searches
    torch.rand(3)
    second = task.search(model, loader, val)
    assert first == second
    measured = [m for _, m in first if m is not None]
    assert len(measured) >= 2 and any(any(c["width"] < 1 for c in p.values()) for p, _ in first)  # fine-tuned trials
    fresh = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(fresh.stdout.strip().splitlines()[-1]) == json.loads(json.dumps(first))
    other = task.search(model, loader, val, seed=7)
    assert [p for p, _ in other] == [p for p, _ in first]  # the seed moves the batches, not the candidates


def _draws_and_threads(shared, payload):
    torch.set_num_threads(3)
    torch.manual_seed(payload)
    random.seed(payload)
    np.random.seed(payload)
    return float(torch.rand(1)), random.random(), float(np.random.rand())


def test_local_trials_restore_the_callers_threads_and_rng(one_thread):
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    expected = (torch.rand(4), random.random(), np.random.rand())
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    results = run_trials(_draws_and_threads, None, [1, 2], backend="local", threads_per_trial=2)
    assert torch.get_num_threads() == 1
    assert torch.equal(torch.rand(4), expected[0]) and random.random() == expected[1]
    assert np.random.rand() == expected[2]
    assert results[0] != results[1]  # the trials really drew


def test_listing_a_shuffled_loader_is_seeded_and_restores_its_generator():
    from torch.utils.data import DataLoader

    g = torch.Generator().manual_seed(5)
    loader = DataLoader(torch.arange(20), batch_size=5, shuffle=True, generator=g)
    state = g.get_state()
    a, b = listed(loader, seed=0), listed(loader, seed=0)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, listed(loader, seed=1), strict=True))
    assert torch.equal(g.get_state(), state)
    assert len(listed(loader, seed=0, limit=2)) == 2
