"""The fused C++ append of :class:`shrink.llm.kv_cache.Int8KVLayer` (``kv_append.cpp``): built on first use with
``torch.utils.cpp_extension`` (a C++ compiler and ninja; once per machine, then cached under torch's extensions folder,
``TORCH_EXTENSIONS_DIR``) and loaded once per process.

In eager decoding the int8 cache's dozen small tensor operations per layer and step cost more than the float cache's
two concatenations; the fused kernel does the same arithmetic, bit for bit, in one call. Where it cannot be built,
``kernel="auto"`` caches fall back to those operations with one warning.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import warnings
from importlib import resources
from types import ModuleType
from typing import Literal

__all__ = ["KVKernel", "KV_KERNELS", "load_kv_kernel", "kv_kernel_error"]

#: how an int8 KV cache appends: "fused" (the C++ kernel; an error when it cannot be built), "eager" (PyTorch tensor
#: operations) or "auto" (fused where it builds, else eager with a warning)
KVKernel = Literal["auto", "fused", "eager"]
KV_KERNELS: tuple[str, ...] = ("auto", "fused", "eager")
_SOURCE = "kv_append.cpp"

log = logging.getLogger(__name__)


@functools.cache
def _build() -> tuple[ModuleType | None, str | None]:
    source = resources.files("shrink.llm").joinpath(_SOURCE)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    try:
        from torch.utils.cpp_extension import load

        with resources.as_file(source) as path:
            log.info("building shrink's int8 KV-cache kernel (once per machine)")
            # the source's hash in the name: an edited kernel is rebuilt, never loaded stale from the cache
            module = load(f"shrink_kv_append_{digest}", [str(path)], extra_cflags=["-O3"], verbose=False)
    except Exception as exc:  # no compiler, no ninja, a failed build: the eager operations still work
        return None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return module, None


def load_kv_kernel(kernel: KVKernel) -> ModuleType | None:
    """The fused kernel's module for ``kernel`` "fused" or "auto" (None for "eager", and for "auto" when it cannot be
    built, after one warning naming why); "fused" that cannot be built raises RuntimeError with the reason."""
    if kernel not in KV_KERNELS:
        raise ValueError(f"Int8KVCache: kernel must be one of {', '.join(KV_KERNELS)}, got {kernel!r}")
    if kernel == "eager":
        return None
    module, error = _build()
    if module is None and kernel == "fused":
        raise RuntimeError(f"Int8KVCache(kernel='fused'): the C++ kernel could not be built: {error}")
    if module is None:
        _warn_once(str(error))
    return module


def kv_kernel_error() -> str | None:
    """Why the fused kernel cannot be built on this machine (None when it can); builds it if not yet tried."""
    return _build()[1]


@functools.cache
def _warn_once(error: str) -> None:
    warnings.warn(
        f"Int8KVCache: the fused C++ kernel could not be built ({error}); appending with PyTorch operations, which "
        "decode more slowly. Install a C++ compiler and ninja, or pass kernel='eager' to silence this.",
        RuntimeWarning,
        stacklevel=4,
    )
