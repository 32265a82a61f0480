"""Per-layer compression choices: bit width, unstructured sparsity and kept channel width.

A :class:`Policy` maps layer names to :class:`LayerChoice`; layers not named stay fp32, dense, full width. The cost
model prices a policy without applying it; :mod:`shrink.autosearch.apply` applies one to a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from shrink.errors import ConfigError

__all__ = ["LayerChoice", "Policy", "FP32", "policy_from_dict", "policy_to_dict"]

BITS = (2, 4, 8, 16, 32)


@dataclass(frozen=True)
class LayerChoice:
    """How one layer is compressed. ``bits`` applies to weights and activations (32 = float, 16 = half);
    ``sparsity`` is the fraction of zero weights; ``width`` the fraction of output channels kept."""

    bits: int = 32
    sparsity: float = 0.0
    width: float = 1.0

    def __post_init__(self) -> None:
        if self.bits not in BITS:
            raise ConfigError(f"LayerChoice.bits must be one of {BITS}, got {self.bits}")
        if not 0.0 <= self.sparsity < 1.0:
            raise ConfigError(f"LayerChoice.sparsity must be in [0, 1), got {self.sparsity}")
        if not 0.0 < self.width <= 1.0:
            raise ConfigError(f"LayerChoice.width must be in (0, 1], got {self.width}")

    def label(self) -> str:
        parts = [f"{self.bits}b" if self.bits < 32 else "fp32"]
        if self.sparsity:
            parts.append(f"s{self.sparsity:.2g}")
        if self.width < 1.0:
            parts.append(f"w{self.width:.2g}")
        return "/".join(parts)


FP32 = LayerChoice()

#: layer name -> choice
Policy = Mapping[str, LayerChoice]


def policy_to_dict(policy: Policy) -> dict[str, dict[str, Any]]:
    return {name: asdict(choice) for name, choice in policy.items()}


def policy_from_dict(data: Mapping[str, Mapping[str, Any]]) -> dict[str, LayerChoice]:
    return {name: LayerChoice(**dict(fields)) for name, fields in data.items()}
