"""Exceptions raised by shrink. Every message names what is wrong and where."""

from __future__ import annotations

__all__ = [
    "ShrinkError",
    "ConfigError",
    "SelectorError",
    "DataError",
    "ModelError",
    "UnsupportedOpError",
    "FileFormatError",
]


class ShrinkError(Exception):
    """Base class for all errors raised by shrink."""


class ConfigError(ShrinkError, ValueError):
    """A config or recipe is malformed: unknown key, wrong type, unknown stage, contradictory stages."""


class SelectorError(ShrinkError, ValueError):
    """A layer selector matched no layer, or matched layers of an unsupported type."""


class DataError(ShrinkError, ValueError):
    """Calibration / evaluation data is empty, mis-shaped or contains NaN/Inf."""


class ModelError(ShrinkError, ValueError):
    """The model cannot be processed: NaN/Inf weights, checkpoint mismatch, untraceable."""


class UnsupportedOpError(ModelError):
    """An operation the algorithm cannot handle; the message names the op and the module path."""


class FileFormatError(ShrinkError, ValueError):
    """A file is truncated, corrupted, of the wrong format or version, or hostile."""
