"""Data-parallel fit under torchrun: 2 CPU processes (gloo, DistributedDataParallel) end with the weights of one
process on the same global batches, with a loss that calls the model's submodules directly (as distillation does)
and a regularizer; only rank 0 writes the checkpoint, holding the unwrapped model's keys. The teardown at exit meets
on the store (no collective) and waits for busy threads. Slow: starts two Python processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from torch import nn
    from shrink.train import fit
    from shrink.train import distributed

    def make():
        torch.manual_seed(0)
        x = torch.randn(96, 10)
        y = (x[:, :3].sum(1) > 0).long() + (x[:, 3:6].sum(1) > 0).long()
        model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 3))
        return model, [(x[i:i + 16], y[i:i + 16]) for i in range(0, 96, 16)]

    def loss_fn(model, x, y):  # calls submodules, not model(x): must still be averaged by DDP
        return nn.functional.cross_entropy(model[2](model[1](model[0](x))), y)

    def l2(model):
        return 1e-3 * sum((p ** 2).sum() for p in model.parameters())

    torch.set_num_threads(1)
    model, batches = make()
    if distributed.setup():
        with torch.no_grad():  # a different start on rank 1: fit must broadcast rank 0's weights
            for p in model.parameters():
                p.add_(distributed.rank())
    fit(model, batches, epochs=3, lr=5e-2, optimizer="sgd", progress=False, checkpoint_dir=sys.argv[2],
        loss_fn=loss_fn, regularizer=l2)
    wrapper = type(distributed.training_step(model, loss_fn)).__name__
    if distributed.is_main():
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, sys.argv[1])
    # one file per rank: the ranks' stdout lines interleave
    with open(f"{sys.argv[1]}.rank{distributed.rank()}", "w") as f:
        f.write(f"world {distributed.world_size()} rank {distributed.rank()} wrapper={wrapper}")
""")


def test_two_process_gloo_run_equals_one_process(tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            str(tmp_path / "ddp.pt"),
            str(tmp_path / "ckpt_ddp"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    for rank in (0, 1):
        report = (tmp_path / f"ddp.pt.rank{rank}").read_text()
        assert report == f"world 2 rank {rank} wrapper=DistributedDataParallel"
    single = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "one.pt"), str(tmp_path / "ckpt_one")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    assert (tmp_path / "one.pt.rank0").read_text() == "world 1 rank 0 wrapper=TrainingStep"
    a, b = torch.load(tmp_path / "ddp.pt"), torch.load(tmp_path / "one.pt")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), (k, float((a[k] - b[k]).abs().max()))
    assert sorted(p.name for p in (tmp_path / "ckpt_ddp").iterdir()) == ["last.pt"]
    saved = torch.load(tmp_path / "ckpt_ddp" / "last.pt", weights_only=True)["model"]
    assert sorted(saved) == sorted(a)  # the unwrapped model's keys: resumes with or without torchrun
    assert all(torch.equal(saved[k], a[k]) for k in a)


MIXUP_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from torch import nn
    from shrink.train import distributed, fit

    torch.manual_seed(0)
    x = torch.randn(96, 10)
    y = (x[:, :3].sum(1) > 0).long()
    model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 3))
    torch.set_num_threads(1)
    distributed.setup()
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 96, 16)]
    start = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, batches, epochs=2, lr=5e-2, optimizer="sgd", progress=False, mixup=True)
    torch.save({"start": start, "end": model.state_dict()}, f"{sys.argv[1]}.rank{distributed.rank()}")
""")


def test_mixup_under_two_processes_keeps_the_ranks_in_step(tmp_path):
    """Each rank blends its own slice of the global batch (blended labels pass through DistributedDataParallel);
    the averaged gradients keep both ranks' weights equal."""
    script = tmp_path / "mixup_ddp.py"
    script.write_text(MIXUP_SCRIPT)
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         str(tmp_path / "w")],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = torch.load(tmp_path / "w.rank0"), torch.load(tmp_path / "w.rank1")
    assert all(torch.equal(a["end"][k], b["end"][k]) for k in a["end"])
    assert not torch.equal(a["end"]["0.weight"], a["start"]["0.weight"])  # it trained


def test_exit_teardown_meets_through_the_store_not_a_collective(monkeypatch):
    """At exit the ranks meet on the group's key-value store: a gloo collective issued there is freed by a gloo
    worker thread that may ask for the GIL while the interpreter finalizes, which aborts the process."""
    import torch.distributed as dist

    from shrink.train import distributed

    def refuse(*args, **kwargs):
        raise AssertionError("a collective at exit")

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        store = dist.distributed_c10d._get_default_store()
        if sys.platform.startswith("linux"):  # the teardown waits for threads of this name: torch still uses it
            # (the worker thread names itself once it runs, which a loaded machine can delay: wait up to 10 s)
            deadline = time.monotonic() + 10
            while not distributed._thread_states(Path("/proc/self/task"), distributed._GLOO_WORKER):
                assert time.monotonic() < deadline, f"no {distributed._GLOO_WORKER} thread after 10 s"
                time.sleep(0.01)
        for name in ("barrier", "all_reduce", "broadcast", "all_gather"):
            monkeypatch.setattr(dist, name, refuse)
        distributed._destroy()
        assert not dist.is_initialized()
        assert store.get("shrink/exit/all") == b"1"
        distributed._destroy()  # nothing left to tear down: a no-op
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_exit_teardown_waits_for_busy_threads_to_sleep():
    """The teardown's wait tells a thread that still runs (a gloo worker freeing a collective) from one asleep."""
    import ctypes
    import hashlib
    import threading
    import time

    from shrink.train import distributed

    spin, stop = threading.Event(), threading.Event()
    spin.set()
    block = bytes(1 << 22)

    def worker():
        ctypes.CDLL(None).prctl(15, b"shrink_test_wkr", 0, 0, 0)  # PR_SET_NAME: the name /proc shows
        while not stop.is_set():
            if spin.is_set():
                hashlib.sha256(block).digest()  # runs (state R) without the GIL: hashlib releases it
            else:
                stop.wait()  # asleep (state S)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        time.sleep(0.05)
        assert not distributed._wait_for_idle_threads("shrink_test_wkr", timeout=0.2)
        spin.clear()
        assert distributed._wait_for_idle_threads("shrink_test_wkr", timeout=2.0)
    finally:
        stop.set()
        thread.join()
