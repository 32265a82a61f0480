"""Ray beyond one process: a head started with ``ray start --head`` plus a second node joined with
``ray start --address``, both on this machine (loopback, one CPU each). Trials land on both nodes, and
``shrink run --ray-address`` gives the same search result as a serial (in-process) run.

Slow (~1-2 min on 2 loaded cores: two Ray nodes, worker processes importing torch, two ``shrink run``). Every step
has a timeout, and the fixture ends exactly the processes of its own cluster (found by its private temp dir)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from shrink.autosearch.trials import run_trials, shutdown_ray, where

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
NODE = ["--num-cpus=1", "--object-store-memory=80000000", "--disable-usage-stats", "--node-ip-address=127.0.0.1"]

FACTORIES = textwrap.dedent("""
    import torch
    from torch import nn
    from shrink.data import DataBundle

    def model():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(256, 8, generator=g)
        y = (x[:, :4].sum(1) > 0).long()
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
        import shrink
        shrink.train.fit(net, [(x[i : i + 32], y[i : i + 32]) for i in range(0, 192, 32)], epochs=10, lr=1e-2,
                         progress=False)
        return net.eval()

    def data():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(256, 8, generator=g)
        y = (x[:, :4].sum(1) > 0).long()
        train = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 192, 32)]
        return DataBundle(train=train, val=[(x[192:], y[192:])], test=[(x[192:], y[192:])], calibration=train,
                          example_inputs=x[:1], name="toy")
""")

RECIPE = """
model: {{factory: "ray_factories:model"}}
data: {{factory: "ray_factories:data"}}
stages:
  - {{type: search, backend: {backend}, profile: phone_npu, objective: bytes, bits: [4, 8, 32], widths: [1.0, 0.5],
     candidates: 4, finetune_epochs: 1, parallel: 2, refine: 0}}
evaluate: {{batch_sizes: [1], reps: 1, warmup: 0}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cluster_pids(marker: str) -> list[int]:
    """Processes of the cluster whose command line names ``marker`` (its temp dir), and their children."""
    owned = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    owned.add(int(entry.name))
            except OSError:
                continue
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid in owned:
                children.add(int(entry.name))
    return sorted(children) + sorted(owned - children)


def _stop(marker: str) -> None:
    for _ in range(3):
        pids = _cluster_pids(marker)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(1)


@pytest.fixture(scope="module")
def cluster():
    tmp = tempfile.mkdtemp(prefix="shr", dir="/tmp")  # short: Ray's socket paths must stay under 107 characters
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    try:
        head = [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={tmp}", *NODE]
        subprocess.run(head, check=True, timeout=180, capture_output=True, env=env)
        second = [RAY, "start", f"--address=127.0.0.1:{port}", *NODE]
        subprocess.run(second, check=True, timeout=180, capture_output=True, env=env)
        yield f"127.0.0.1:{port}"
    finally:
        shutdown_ray()
        _stop(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def test_trials_run_on_both_nodes(cluster):
    import ray

    placed = run_trials(where, None, [4.0, 4.0], backend="ray", parallel=2, address=cluster)
    alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    assert len(alive) == 2
    assert {node for node, _ in placed} == set(alive)  # two one-CPU trials at once: one on each node
    shutdown_ray()


def test_shrink_run_on_the_cluster_matches_a_serial_run(cluster, tmp_path):
    (tmp_path / "ray_factories.py").write_text(FACTORIES)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"PYTHONPATH": f"{tmp_path}{os.pathsep}{env.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    shrink = str(Path(sys.executable).with_name("shrink"))
    results = {}
    for backend, extra in (("ray", ["--ray-address", cluster]), ("local", [])):
        recipe = tmp_path / f"{backend}.yaml"
        recipe.write_text(RECIPE.format(backend=backend))
        out = tmp_path / f"out_{backend}"
        cmd = [shrink, "run", str(recipe), "--out", str(out), "--quiet", *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[backend] = json.loads((out / "search.json").read_text())
    on_ray, serial = results["ray"], results["local"]
    assert [p["measured_metric"] for p in on_ray["points"]] == [p["measured_metric"] for p in serial["points"]]
    assert [p["policy"] for p in on_ray["points"]] == [p["policy"] for p in serial["points"]]
    assert on_ray["best"] == serial["best"] and sum(p["measured_metric"] is not None for p in on_ray["points"]) >= 2
