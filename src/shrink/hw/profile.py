"""Hardware profiles: what a target can do, loaded from YAML (bundled in ``shrink/hw/profiles`` or a user file).

Two kinds:

* ``accelerator`` — a modelled device (NPU, edge TPU): MAC rates per precision, on-chip SRAM, DRAM bandwidth,
  energy per MAC and per byte. Costs come from a roofline estimate (:mod:`shrink.hw.roofline`).
* ``measured`` — this machine's CPU through a real runtime: costs come from a latency table built by timing each
  layer configuration (:mod:`shrink.hw.measured`).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Literal

import pydantic
import yaml

from shrink.config import format_validation_error
from shrink.errors import ConfigError

__all__ = [
    "Profile",
    "AcceleratorSpec",
    "MeasuredSpec",
    "load_profile",
    "bundled_profiles",
    "PRECISIONS",
    "precision_of",
]

#: precisions from narrowest to widest; a device without one runs the layer at the next wider one it has
PRECISIONS = ("int2", "int4", "int8", "fp16", "fp32")
_OF_BITS = {2: "int2", 4: "int4", 8: "int8", 16: "fp16", 32: "fp32"}


def precision_of(bits: int) -> str:
    return _OF_BITS[bits]


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")


class EnergySpec(_Strict):
    """Energy in picojoules per MAC (by precision) and per byte read or written."""

    mac_pj: dict[str, float]
    sram_byte_pj: float = pydantic.Field(..., gt=0)
    dram_byte_pj: float = pydantic.Field(..., gt=0)


class AcceleratorSpec(_Strict):
    macs_per_s: dict[str, float]  # peak MAC/s by precision; absent precisions are not supported
    utilization: float = pydantic.Field(0.5, gt=0, le=1)  # fraction of peak reached on typical layers
    sram_bytes: int = pydantic.Field(..., gt=0)
    dram_bytes_per_s: float = pydantic.Field(..., gt=0)
    layer_overhead_s: float = pydantic.Field(0.0, ge=0)
    sparse_weights: bool = False  # zero weights skipped in compute and stored compressed
    energy: EnergySpec

    @pydantic.field_validator("macs_per_s")
    @classmethod
    def _known_precisions(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - set(PRECISIONS)
        if unknown:
            raise ValueError(f"unknown precisions {sorted(unknown)} (known: {PRECISIONS})")
        if not v:
            raise ValueError("at least one precision is needed")
        return v

    def executed_as(self, bits: int) -> str:
        """The precision a layer quantized to ``bits`` runs at on this device."""
        for p in PRECISIONS[PRECISIONS.index(precision_of(bits)) :]:
            if p in self.macs_per_s:
                return p
        return max(self.macs_per_s, key=PRECISIONS.index)


class MeasuredSpec(_Strict):
    runtime: Literal["onnxruntime", "torch"] = "onnxruntime"
    threads: int = pydantic.Field(2, ge=1)
    int8_kernels: bool = True  # layers at <= 8 bits run on int8 kernels (QDQ in ONNX Runtime)
    sparse_kernels: bool = False  # dense kernels: unstructured zeros do not save time
    reps: int = pydantic.Field(30, ge=3)


class Profile(_Strict):
    name: str
    kind: Literal["accelerator", "measured"]
    description: str = ""
    accelerator: AcceleratorSpec | None = None
    measured: MeasuredSpec | None = None

    @pydantic.model_validator(mode="after")
    def _section_matches_kind(self) -> Profile:
        if self.kind == "accelerator" and self.accelerator is None:
            raise ValueError("kind 'accelerator' needs an 'accelerator' section")
        if self.kind == "measured" and self.measured is None:
            raise ValueError("kind 'measured' needs a 'measured' section")
        return self


def bundled_profiles() -> list[str]:
    """Names of the profiles shipped with shrink."""
    root = resources.files("shrink.hw").joinpath("profiles")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_profile(name_or_path: str | os.PathLike[str] | Profile) -> Profile:
    """A bundled profile by name (``"cpu"``, ``"phone_npu"``, ``"edge_tpu"``) or a YAML file."""
    if isinstance(name_or_path, Profile):
        return name_or_path
    path = Path(name_or_path)
    if not path.suffix:
        if str(name_or_path) not in bundled_profiles():
            raise ConfigError(f"unknown hardware profile {str(name_or_path)!r} (bundled: {bundled_profiles()})")
        text = resources.files("shrink.hw").joinpath(f"profiles/{name_or_path}.yaml").read_text(encoding="utf-8")
    elif path.is_file():
        text = path.read_text(encoding="utf-8")
    else:
        raise ConfigError(f"hardware profile file {str(path)!r} not found")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"hardware profile {str(name_or_path)!r}: malformed YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"hardware profile {str(name_or_path)!r}: expected a mapping")
    try:
        return Profile(**data)
    except pydantic.ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where=f"hardware profile {str(name_or_path)!r}")) from None
