"""Every recipe stage type, by name.

The families' config classes register themselves with :func:`shrink.config.register` when their package is
imported; this module imports the families (the explicit list below: the ones whose configs may appear in
recipes), so it sits above all of them, while :mod:`shrink.config` stays at the bottom and imports none.
"""

from __future__ import annotations

import difflib
from typing import Any

import shrink.autosearch  # noqa: F401
import shrink.deepcomp  # noqa: F401  (importing a family registers its stage types)
import shrink.distillation  # noqa: F401
import shrink.export.stage  # noqa: F401
import shrink.lowrank  # noqa: F401
import shrink.pruning  # noqa: F401
import shrink.quant  # noqa: F401
import shrink.train  # noqa: F401
from shrink.config import Config, registered_so_far
from shrink.errors import ConfigError

__all__ = ["registered_types", "config_from_dict"]


def registered_types() -> dict[str, type[Config]]:
    """All config types known to recipes, by name."""
    return dict(sorted(registered_so_far().items()))


def config_from_dict(data: Any, where: str = "config") -> Config:
    """Build a registered config from ``{"type": name, **fields}``; errors name ``where``, the type and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with a 'type' key, got {type(data).__name__}")
    if "type" not in data:
        raise ConfigError(f"{where}: missing 'type' (one of: {', '.join(registered_types())})")
    name = data["type"]
    types = registered_types()
    if name not in types:
        close = difflib.get_close_matches(str(name), list(types), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"{where}: unknown stage type {name!r} ({hint}known: {', '.join(types)})")
    fields = {k: v for k, v in data.items() if k != "type"}
    try:
        return types[name](**fields)
    except ConfigError as exc:
        raise ConfigError(f"{where} (type {name!r}): {exc}") from None
