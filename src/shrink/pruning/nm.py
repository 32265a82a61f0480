"""N:M semi-structured pruning as one config: choose the pattern by magnitude, fine-tune with the masks fixed,
then pack the weights (values + m-bit fields) into :mod:`shrink.pruning.nm_layers`.

On CPU this saves bytes, not time: PyTorch's semi-structured sparse kernels (``to_sparse_semi_structured``) need
CUDA sparse tensor cores, and no CPU runtime shrink measures has an N:M kernel. The report says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic
import torch
from torch import nn

from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.errors import DataError, SelectorError
from shrink.pruning.masks import apply_mask, weight_of
from shrink.pruning.nm_layers import pack_nm
from shrink.pruning.nm_pattern import nm_compatible, nm_mask
from shrink.select import Selector, select_modules
from shrink.train import fit

__all__ = ["NMSparsity", "NM_CPU_NOTE", "pack_nm_model"]

NM_CPU_NOTE = (
    "N:M sparsity gives no speed-up on CPU (no N:M kernel): it needs hardware support such as NVIDIA "
    "sparse tensor cores; on CPU it only makes the stored model smaller"
)


@register("nm_sparsity", family="prune")
class NMSparsity(Config):
    """Keep the ``n`` largest of every ``m`` consecutive input weights (2:4, 4:8), fine-tune ``epochs`` epochs with
    the pattern fixed, and (``pack=True``) store the layers packed.

    Layers whose input dimension is not a multiple of ``m`` (e.g. a first conv on 1 channel) are skipped and listed
    in the report, or raise with ``incompatible="error"``.
    """

    n: int = pydantic.Field(2, ge=1)
    m: int = pydantic.Field(4, ge=2, le=32)
    selector: Selector = Selector(types=("Linear", "Conv1d", "Conv2d"))
    epochs: int = pydantic.Field(0, ge=0)
    lr: float = pydantic.Field(1e-3, gt=0)
    weight_decay: float = pydantic.Field(0.0, ge=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    #: store the layers packed (kept values + an m-bit field per group); False: dense weights under masks
    pack: bool = True
    #: layers whose input dimension is not a multiple of m: 'skip' keeps them dense, 'error' raises
    incompatible: Literal["skip", "error"] = "skip"
    seed: int = 0

    @pydantic.model_validator(mode="after")
    def _check_nm(self) -> NMSparsity:
        if self.n >= self.m:
            raise ValueError(f"n must be smaller than m, got {self.n}:{self.m}")
        return self


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def pack_nm_model(model: nn.Module, modules: dict[str, nn.Module], n: int, m: int) -> nn.Module:
    """Replace each of ``modules`` (names in ``model``) by its packed N:M layer, in place."""
    for name, module in modules.items():
        _set_submodule(model, name, pack_nm(module, n, m))
    return model


@implements(NMSparsity)
def nm_prune(model: nn.Module, config: NMSparsity, ctx: Context) -> nn.Module:
    """Mask, fine-tune and pack the selected layers."""
    where = "nm_sparsity.selector"
    selected = select_modules(model, config.selector, where=where)
    modules, skipped = {}, []
    for name, module in selected.items():
        weight = getattr(module, "weight", None)
        ok = isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)) and isinstance(weight, torch.Tensor)
        if ok and nm_compatible(weight, config.m):  # type: ignore[arg-type]
            modules[name] = module
        else:
            shape = tuple(weight.shape) if weight is not None else None
            skipped.append(f"{name} ({type(module).__name__}, weight {shape})")
    if skipped and config.incompatible == "error":
        raise SelectorError(
            f"{where}: layers without whole groups of m={config.m} along the input dimension: " + ", ".join(skipped)
        )
    if not modules:
        raise SelectorError(
            f"{where}: no selected layer can hold a {config.n}:{config.m} pattern (skipped: {', '.join(skipped)})"
        )
    for module in modules.values():
        apply_mask(module, nm_mask(weight_of(module), config.n, config.m))
    if config.epochs:
        if ctx.train is None:
            raise DataError("nm_sparsity: fine-tuning needs training data (train=...)")
        fit(
            model,
            ctx.train,
            epochs=config.epochs,
            lr=config.lr,
            weight_decay=config.weight_decay,
            optimizer=config.optimizer,
            checkpoint_dir=Path(ctx.checkpoint_dir) / "nm" if ctx.checkpoint_dir else None,
            progress=ctx.progress,
            desc=f"{config.n}:{config.m} fine-tune",
            seed=config.seed,
        )
    if config.pack:
        pack_nm_model(model, modules, config.n, config.m)
        setattr(model, "shrink_execution", f"{config.n}:{config.m} packed, dense kernel on CPU")  # noqa: B010
    if skipped:
        ctx.notes.append(
            f"nm_sparsity: kept dense (input dimension not a multiple of {config.m}): " + ", ".join(skipped)
        )
    ctx.notes.append(f"nm_sparsity: {config.n}:{config.m} on {len(modules)} layers; {NM_CPU_NOTE}")
    return model.eval()
