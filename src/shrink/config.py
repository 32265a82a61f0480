"""Frozen, versioned configs that round-trip to YAML/JSON.

Every algorithm is one config class. A config serialises to ``{"type": <name>, **fields}``; the ``type`` names the
class in a registry filled by :func:`register`. Unknown keys and wrong types are errors that name the field.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, ClassVar, TypeVar

import pydantic

from shrink.errors import ConfigError

__all__ = ["Config", "register", "registered_so_far", "format_validation_error"]

_REGISTRY: dict[str, type[Config]] = {}
C = TypeVar("C", bound="type[Config]")


class Config(pydantic.BaseModel):
    """Base class of every algorithm config: immutable, strict about unknown keys, versioned."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", validate_default=True)

    type_name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    #: which public verb runs this config: "prune", "quantize", "distill", "decompose", "deep_compress", ...
    family: ClassVar[str] = ""
    #: a preparation step (smooth_quant, awq, gptq): it leaves a float model for the stage of its family listed
    #: after it, so a recipe may list it before that stage (and not after)
    prepares: ClassVar[bool] = False

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except pydantic.ValidationError as exc:
            fields = type(self).model_fields
            raise ConfigError(format_validation_error(exc, where=type(self).__name__, known=fields)) from None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict ``{"type": ..., **fields}``; :func:`shrink.stages.config_from_dict` turns it back."""
        return {"type": self.type_name, **self.model_dump(mode="json")}


def register(name: str, family: str, version: int = 1):
    """Class decorator: make a config class loadable from recipes under ``type: name``."""

    def deco(cls: C) -> C:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ConfigError(f"config type {name!r} is registered twice ({_REGISTRY[name].__name__}, {cls.__name__})")
        cls.type_name = name
        cls.family = family
        cls.version = version
        _REGISTRY[name] = cls
        return cls

    return deco


def registered_so_far() -> dict[str, type[Config]]:
    """The config types registered by the packages imported so far (:mod:`shrink.stages` imports them all)."""
    return dict(_REGISTRY)


def refuse_moved_fields(stage: str, data: Any, moved: dict[str, str]) -> None:
    """Raise ``ValueError`` (a pydantic "before" validator turns it into a validation error) naming every key of
    ``data`` that is no longer a field of ``stage`` and how to write it now (``moved``: field -> advice)."""
    found = [k for k in moved if isinstance(data, dict) and k in data]
    if found:
        raise ValueError("; ".join(f"'{k}' is no longer a field of {stage}: {moved[k]}" for k in found))


def format_validation_error(exc: pydantic.ValidationError, where: str, known: Iterable[str] = ()) -> str:
    """One line naming every bad field; an unknown top-level field gets a "did you mean" from ``known``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(loc, list(known), n=1)
            parts.append(f"unknown field {loc!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        elif err["type"] == "missing":
            parts.append(f"missing required field {loc!r}")
        else:
            parts.append(f"field {loc!r}: {err['msg']} (got {err.get('input')!r})")
    return f"{where}: " + "; ".join(parts)
