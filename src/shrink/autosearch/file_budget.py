"""Byte budgets held on the written file, not on an estimate.

A byte budget counts what the model file holds for the budgeted layers: codes at their bit width (bit-packed, or
mask + packed non-zeros), per-channel scales, biases and input grids (see :mod:`shrink.autosearch.options`). After an
allocation is applied, the model is written with :func:`shrink.save` and the file is read back
(:mod:`shrink.export.size`):

* the budgeted layers' tensors must take at most the budget;
* the whole file must be at most ``budget + other + HEADER_BYTES_PER_MODULE x modules``, where ``other`` is what the
  file spends on every tensor outside the budget (layers not selected, BatchNorm, embeddings: stored as they are,
  measured) and :data:`HEADER_BYTES_PER_MODULE` is the fixed allowance for the header.

The option costs mirror the file layout, so the first holds unless cost model and file format disagree; the second
unless the header is unusually large. A user who asked for a budget expects the file to meet it, so when the file
misses, the allocation is solved again with the budget lowered by the excess (at most :data:`RESOLVE_TRIES` times);
if no allocation fits, ConfigError says by how much the file missed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from shrink.autosearch.allocate import Allocation, Option, allocate
from shrink.autosearch.apply import apply_policy
from shrink.errors import ConfigError
from shrink.export.size import FileSize, artifact_size
from shrink.quant.numerics.qparams import QParams

__all__ = ["HEADER_BYTES_PER_MODULE", "RESOLVE_TRIES", "FileCheck", "check_file", "fit_file"]

#: Allowance per module of the model for the bytes of a model file outside any tensor: safetensors' 8-byte length and
#: JSON header (an entry per stored tensor: name, dtype, shape, offsets) holding shrink's JSON manifest (each module's
#: class, constructor arguments and simple attributes; the layout entry of each packed or sparse tensor). Measured:
#: ~400 B per module for the digits CNN at mixed precision (7,536 B, 19 modules), ~330 B for MiniLM with one block
#: at 4 bits (39,472 B, 121 modules), ~680 B for a bare Sequential of three 4-bit Linears (the worst case seen).
HEADER_BYTES_PER_MODULE = 1024
#: how many times an allocation whose file misses the budget is solved again with a tighter budget
RESOLVE_TRIES = 3


@dataclass(frozen=True)
class FileCheck:
    """A written file against a byte budget over the layers ``budgeted``."""

    size: FileSize
    budget: float
    budgeted: int  # bytes of the budgeted layers' tensors
    modules: int  # modules in the model (the header allowance is per module)

    @property
    def other(self) -> int:
        """Bytes of the tensors outside the budget."""
        return sum(self.size.tensors.values()) - self.budgeted

    @property
    def limit(self) -> float:
        """The most the file may take: budget + other tensors + header allowance."""
        return self.budget + self.other + HEADER_BYTES_PER_MODULE * self.modules

    @property
    def excess(self) -> float:
        """Bytes by which the file misses (0 when it meets the budget and the limit)."""
        return max(self.budgeted - self.budget, self.size.total - self.limit, 0.0)

    def describe(self) -> str:
        return (
            f"written file {self.size.total:,} B = budgeted layers {self.budgeted:,} B (budget {self.budget:,.0f} B) "
            f"+ other tensors {self.other:,} B + header and manifest {self.size.header:,} B (allowance "
            f"{HEADER_BYTES_PER_MODULE} B x {self.modules} modules); limit {self.limit:,.0f} B"
        )


def check_file(model: nn.Module, layers: Sequence[str], budget: float) -> FileCheck:
    """Write ``model`` with :func:`shrink.save`, read the file back and compare it with ``budget`` over ``layers``."""
    size = artifact_size(model)
    return FileCheck(size, budget, size.of_modules(layers), sum(1 for _ in model.modules()))


def fit_file(
    model: nn.Module,
    options: Mapping[str, Sequence[Option]],
    allocation: Allocation,
    budget: float,
    *,
    solver: str = "milp",
    input_qparams: dict[str, QParams] | None = None,
) -> tuple[nn.Module, Allocation, list[FileCheck]]:
    """Apply ``allocation`` to a copy of ``model``, check the written file against ``budget`` and solve again with
    the budget lowered by the excess while it misses (see the module docstring). Returns the applied model, the
    allocation it uses and every check made (the last one passed)."""
    checks: list[FileCheck] = []
    target = budget
    for _ in range(RESOLVE_TRIES + 1):
        out = apply_policy(model, allocation.policy, input_qparams=input_qparams)
        checks.append(check_file(out, list(allocation.policy), budget))
        if checks[-1].excess <= 0:
            return out, allocation, checks
        target -= checks[-1].excess
        try:
            allocation = allocate(options, {"bytes": target}, solver=solver)
        except ConfigError as exc:
            raise _missed(checks, f"no allocation fits the budget tightened to {target:,.0f} B ({exc})") from None
    raise _missed(checks, f"still over after {RESOLVE_TRIES} tighter allocations")


def _missed(checks: list[FileCheck], why: str) -> ConfigError:
    return ConfigError(
        f"mixed_precision: the model file misses the byte budget by {checks[-1].excess:,.0f} B: "
        f"{checks[-1].describe()}; {why}"
    )
