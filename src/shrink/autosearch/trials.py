"""Run search trials concurrently: on Ray (a local instance by default; a cluster with ``address`` or the
``RAY_ADDRESS`` environment variable), or one after another in this process (``backend="local"``). Ray is
imported only when used."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from shrink.errors import ConfigError

__all__ = ["run_trials", "shutdown_ray", "rendezvous", "where", "listed"]

#: trial(shared, payload) -> result; must be a module-level function (workers import it by name)
Trial = Callable[[Any, Any], Any]


def _call(fn: Trial, shared: Any, payload: Any, threads: int) -> Any:
    """``fn(shared, payload)`` on ``threads`` threads; the process's thread count and its torch, Python and numpy
    random states are restored afterwards (in-process trials leave the caller as it was)."""
    import random

    import numpy as np
    import torch

    before = torch.get_num_threads()
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.set_num_threads(threads)
        try:
            return fn(shared, payload)
        finally:
            torch.set_num_threads(before)
            random.setstate(py_state)
            np.random.set_state(np_state)


def listed(data: Any, seed: int, limit: int | None = None) -> list[Any]:
    """The first ``limit`` batches of ``data`` as a list, the same ones for the same ``seed``: a shuffling
    DataLoader's generator (or torch's global RNG, which a loader without one draws from) is seeded for the
    listing, and the caller's generator states are restored afterwards."""
    import torch

    generator = getattr(data, "generator", None)
    saved = generator.get_state() if isinstance(generator, torch.Generator) else None
    out: list[Any] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(generator, torch.Generator):
            generator.manual_seed(seed)
        try:
            for i, batch in enumerate(data or []):
                if limit is not None and i >= limit:
                    break
                out.append(batch)
        finally:
            if isinstance(generator, torch.Generator) and saved is not None:
                generator.set_state(saved)
    return out


def _ray(address: str | None, parallel: int):
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is pinned in requirements.txt
        raise ConfigError("search: backend 'ray' needs the ray package (pip install ray)") from exc
    # `shrink run --ray-address` sets RAY_ADDRESS; without an address a fresh local instance is started ("local"),
    # never a cluster that happens to be running on this machine (ray.init() alone would join the latest one)
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address == "local":
            kwargs["num_cpus"] = parallel  # a local instance runs `parallel` one-CPU trials at a time
        try:
            ray.init(address=address, **kwargs)
        except Exception as exc:  # Ray waits a fixed 30 s for its local node; on a loaded machine try once more
            if address != "local":
                raise ConfigError(f"search: cannot join the Ray cluster at {address!r}: {exc}") from None
            if "timed out during startup" not in str(exc):
                raise
            ray.shutdown()
            ray.init(address=address, **kwargs)
    return ray


def run_trials(
    fn: Trial,
    shared: Any,
    payloads: Sequence[Any],
    *,
    backend: str = "ray",
    parallel: int = 2,
    address: str | None = None,
    threads_per_trial: int = 1,
) -> list[Any]:
    """``[fn(shared, p) for p in payloads]``, up to ``parallel`` at a time on Ray, in payload order.

    ``shared`` (model, data) is put in Ray's object store once and passed to every trial.
    """
    if backend == "local":
        return [_call(fn, shared, p, threads_per_trial) for p in payloads]
    if backend != "ray":
        raise ConfigError(f"search: backend must be 'ray' or 'local', got {backend!r}")
    ray = _ray(address, parallel)
    remote = ray.remote(num_cpus=threads_per_trial)(_call)
    ref = ray.put(shared)
    pending = [remote.remote(fn, ref, p, threads_per_trial) for p in payloads]
    return ray.get(pending)


def shutdown_ray() -> None:
    """Stop the Ray instance this process started (no-op when Ray is not running)."""
    try:
        import ray
    except ImportError:  # pragma: no cover
        return
    if ray.is_initialized():
        ray.shutdown()


def rendezvous(shared: Any, meeting: tuple[str, str, str, float]) -> tuple[int, bool]:
    """A trial that shows whether trials run concurrently, whatever the machine's load: ``meeting`` is (a folder both
    trials see, this trial's name, its peer's name, the longest wait in seconds). It leaves a file named after itself
    in the folder and waits for its peer's; ``(process id, whether the peer's file appeared in time)``. Trials run
    one after another never meet: the first gives up after the wait."""
    import os
    import time
    from pathlib import Path

    folder, name, peer, wait = meeting
    (Path(folder) / name).touch()
    deadline = time.monotonic() + wait
    while not (Path(folder) / peer).exists():
        if time.monotonic() > deadline:
            return os.getpid(), False
        time.sleep(0.05)
    return os.getpid(), True


def where(shared: Any, seconds: float) -> tuple[str, int]:
    """A trial that waits ``seconds`` and says where it ran: ``(Ray node id, process id)``."""
    import os
    import time

    import ray

    time.sleep(seconds)
    return ray.get_runtime_context().get_node_id(), os.getpid()
