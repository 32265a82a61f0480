"""Decomposition configs — ``svd`` (Linear), ``tucker`` and ``cp`` (Conv2d) — and their handlers.

Each selected layer is replaced by a :class:`Factorized` module; layers whose factorization would not save
parameters are kept and named in the report notes. Fine-tune afterwards with a ``finetune`` (or ``distill``) stage.
"""

from __future__ import annotations

from typing import Literal

import pydantic
from torch import nn

from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.lowrank.cp import cp_conv
from shrink.lowrank.rank import cp_budget_rank, energy_rank, svd_budget_rank, tucker_budget_ranks
from shrink.lowrank.svd import singular_values, svd_linear
from shrink.lowrank.tucker import mode_singular_values, tucker2_conv
from shrink.select import Selector, select_modules

__all__ = ["SVDDecomposition", "TuckerDecomposition", "CPDecomposition", "replace_module"]


class _RankChoice(Config):
    """Exactly one of ``energy`` (keep this fraction of squared singular values), ``param_fraction`` (the
    factorized layer keeps at most this fraction of its parameters) or ``rank`` (fixed)."""

    energy: float | None = pydantic.Field(None, gt=0.0, le=1.0)
    param_fraction: float | None = pydantic.Field(None, gt=0.0, lt=1.0)
    rank: int | None = pydantic.Field(None, ge=1)

    @pydantic.model_validator(mode="after")
    def _one_choice(self) -> _RankChoice:
        given = [k for k in ("energy", "param_fraction", "rank") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of energy, param_fraction, rank (got {given or 'none'})")
        return self


@register("svd", family="decompose")
class SVDDecomposition(_RankChoice):
    """Truncated SVD of Linear layers into ``in → r → out``."""

    selector: Selector = Selector(types=("Linear",))


@register("tucker", family="decompose")
class TuckerDecomposition(_RankChoice):
    """Tucker-2 of Conv2d layers: ``1x1 → k×k core → 1x1``; ``rank`` applies to both channel modes."""

    selector: Selector = Selector(types=("Conv2d",))
    #: 'hosvd': leading singular vectors of each channel mode; 'hooi': HOSVD plus 20 alternating refinements
    method: Literal["hosvd", "hooi"] = "hooi"


@register("cp", family="decompose")
class CPDecomposition(_RankChoice):
    """CP decomposition (ALS) of Conv2d layers into ``1x1 → k×1 dw → 1×k dw → 1x1``; no ``energy`` choice."""

    selector: Selector = Selector(types=("Conv2d",))
    #: most ALS iterations (stops earlier once the relative error changes by less than 1e-7)
    n_iter: int = pydantic.Field(100, ge=1)
    seed: int = 0

    @pydantic.model_validator(mode="after")
    def _no_energy(self) -> CPDecomposition:
        if self.energy is not None:
            raise ValueError("cp has no singular-value energy; choose param_fraction or rank")
        return self


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _swap(model: nn.Module, name: str, old: nn.Module, new: nn.Module, ctx: Context, what: str) -> None:
    if _params(new) >= _params(old):
        ctx.notes.append(f"{what}: kept {name} ({new.rank}: factorization would not save parameters)")
        return
    replace_module(model, name, new)


@implements(SVDDecomposition)
def svd_handler(model: nn.Module, config: SVDDecomposition, ctx: Context) -> nn.Module:
    for name, layer in select_modules(model, config.selector, where="svd.selector").items():
        if not isinstance(layer, nn.Linear):
            ctx.notes.append(f"svd: skipped {name} ({type(layer).__name__} is not Linear)")
            continue
        full = min(layer.weight.shape)
        if config.rank is not None:
            rank = min(config.rank, full)
        elif config.energy is not None:
            rank = energy_rank(singular_values(layer.weight), config.energy)
        else:
            rank = svd_budget_rank(layer.out_features, layer.in_features, config.param_fraction or 1.0)
        _swap(model, name, layer, svd_linear(layer, min(rank, full)), ctx, "svd")
    return model


def _conv_ok(name: str, layer: nn.Module, ctx: Context, what: str) -> bool:
    if not isinstance(layer, nn.Conv2d) or layer.groups != 1 or layer.kernel_size == (1, 1):
        ctx.notes.append(f"{what}: skipped {name} (needs a Conv2d with groups=1 and a kernel larger than 1x1)")
        return False
    if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
        ctx.notes.append(f"{what}: skipped {name} (string padding or padding_mode={layer.padding_mode!r})")
        return False
    return True


@implements(TuckerDecomposition)
def tucker_handler(model: nn.Module, config: TuckerDecomposition, ctx: Context) -> nn.Module:
    for name, layer in select_modules(model, config.selector, where="tucker.selector").items():
        if not _conv_ok(name, layer, ctx, "tucker") or not isinstance(layer, nn.Conv2d):
            continue
        out_ch, in_ch, kh, kw = layer.weight.shape
        if config.rank is not None:
            r_out, r_in = config.rank, config.rank
        elif config.energy is not None:
            r_out = energy_rank(mode_singular_values(layer.weight, 0), config.energy)
            r_in = energy_rank(mode_singular_values(layer.weight, 1), config.energy)
        else:
            r_out, r_in = tucker_budget_ranks(out_ch, in_ch, kh * kw, config.param_fraction or 1.0)
        new = tucker2_conv(layer, min(r_out, out_ch), min(r_in, in_ch), config.method)
        _swap(model, name, layer, new, ctx, "tucker")
    return model


@implements(CPDecomposition)
def cp_handler(model: nn.Module, config: CPDecomposition, ctx: Context) -> nn.Module:
    for name, layer in select_modules(model, config.selector, where="cp.selector").items():
        if not _conv_ok(name, layer, ctx, "cp") or not isinstance(layer, nn.Conv2d):
            continue
        out_ch, in_ch, kh, kw = layer.weight.shape
        rank = config.rank or cp_budget_rank(out_ch, in_ch, kh, kw, config.param_fraction or 1.0)
        _swap(model, name, layer, cp_conv(layer, rank, config.n_iter, config.seed), ctx, "cp")
    return model
