"""``deep_compression``: the three-stage pipeline of Han et al. (2016) as one config —
magnitude pruning + fine-tuning → k-means weight sharing + centroid fine-tuning → Huffman-coded file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal

import pydantic
from torch import nn

from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.deepcomp.container import MAX_GAP_BITS, TensorStats
from shrink.deepcomp.io import save_compressed
from shrink.deepcomp.sharing import share_weights
from shrink.errors import DataError, ModelError
from shrink.export.artifact import artifact_bytes, state_digest
from shrink.pruning.magnitude import MagnitudePruning, magnitude_masks
from shrink.pruning.masks import apply_mask, make_permanent
from shrink.select import Selector, select_modules
from shrink.train.loop import fit

__all__ = ["DeepCompression", "deep_compression_handler", "summarize"]


@register("deep_compression", family="deep_compress")
class DeepCompression(Config):
    """Prune ``sparsity`` of the weights by magnitude (``scope`` global or per layer; reached gradually over the
    first half of ``prune_epochs``) and fine-tune; share each
    layer's remaining weights among ``2^conv_bits`` / ``2^linear_bits`` values and fine-tune the centroids; write
    ``filename`` (in a recipe's output folder) with Huffman-coded indices and relative positions."""

    sparsity: float = pydantic.Field(0.9, ge=0.0, lt=1.0)
    scope: Literal["global", "layer"] = "global"
    #: index bits of non-Linear (conv) layers: their weights share 2^conv_bits k-means values per layer
    conv_bits: int = pydantic.Field(5, ge=1, le=8)
    #: index bits of Linear layers: their weights share 2^linear_bits k-means values per layer
    linear_bits: int = pydantic.Field(4, ge=1, le=8)
    #: conv layers: a non-zero's gap from the previous one is at most 2^bits (longer: filler entries)
    conv_gap_bits: int = pydantic.Field(8, ge=1, le=MAX_GAP_BITS)
    #: Linear layers: a non-zero's gap from the previous one is at most 2^bits (longer: filler entries)
    linear_gap_bits: int = pydantic.Field(5, ge=1, le=MAX_GAP_BITS)
    #: fine-tuning epochs of the pruning phase, sparsity ramped over the first half (0: one-shot pruning)
    prune_epochs: int = pydantic.Field(10, ge=0)
    #: fine-tuning epochs of the shared values (centroids) after weight sharing
    cluster_epochs: int = pydantic.Field(3, ge=0)
    lr: float = pydantic.Field(1e-3, gt=0)
    #: learning rate of the centroid fine-tuning (lr is the pruning phase's)
    cluster_lr: float = pydantic.Field(1e-4, gt=0)
    selector: Selector = Selector()
    filename: str = "model.dcz"


def summarize(stats: list[TensorStats]) -> dict[str, float]:
    """Totals over shared tensors: non-zeros, entries, stream bits and bits per entry vs empirical entropy."""
    entries = sum(s.entries for s in stats)
    return {
        "nonzero": sum(s.nonzero for s in stats),
        "entries": entries,
        "index_bits_per_entry": sum(s.index_bits for s in stats) / max(entries, 1),
        "index_entropy": sum(s.index_entropy * s.entries for s in stats) / max(entries, 1),
        "gap_bits_per_entry": sum(s.gap_bits for s in stats) / max(entries, 1),
        "gap_entropy": sum(s.gap_entropy * s.entries for s in stats) / max(entries, 1),
    }


def _train(model: nn.Module, ctx: Context, epochs: int, lr: float, stage: str, on_epoch_end=None) -> None:
    if epochs == 0:
        return
    if ctx.train is None:
        raise DataError(
            f"deep_compression: {stage} fine-tuning needs training data (train=...; or set its epochs to 0)"
        )
    checkpoint = Path(ctx.checkpoint_dir) / stage if ctx.checkpoint_dir is not None else None
    fit(
        model,
        ctx.train,
        epochs=epochs,
        lr=lr,
        checkpoint_dir=checkpoint,
        progress=ctx.progress,
        desc=f"deep compression: {stage}",
        on_epoch_end=on_epoch_end,
    )


def _prune_gradually(model: nn.Module, modules: dict[str, nn.Module], config: DeepCompression, ctx: Context) -> None:
    """Magnitude pruning reaching ``sparsity`` over the first half of ``prune_epochs`` on a cubic schedule (Zhu &
    Gupta, 2017), then fine-tuning at the final sparsity; with no epochs, one-shot pruning."""
    ramp = max(1, config.prune_epochs // 2)

    def prune_to(step: int) -> None:
        sparsity = config.sparsity * (1.0 - (1.0 - min(step, ramp) / ramp) ** 3)
        pruning = MagnitudePruning(sparsity=sparsity, scope=config.scope)
        for name, mask in magnitude_masks(modules, pruning).items():
            apply_mask(modules[name], mask)

    prune_to(1 if config.prune_epochs else ramp)
    _train(model, ctx, config.prune_epochs, config.lr, "prune", on_epoch_end=lambda epoch: prune_to(epoch + 2))
    make_permanent(model)


@implements(DeepCompression)
def deep_compression_handler(model: nn.Module, config: DeepCompression, ctx: Context) -> nn.Module:
    """Run the pipeline in place and return the weight-shared model (plain weights equal to the decoded file)."""
    modules = select_modules(model, config.selector, where="deep_compression.selector")
    _prune_gradually(model, modules, config, ctx)
    for name, module in modules.items():
        if not bool(module.get_parameter("weight").detach().any()):
            raise ModelError(
                f"deep_compression: layer {name!r} has no non-zero weight left after pruning to "
                f"{config.sparsity:.0%}; lower the sparsity or leave the layer out with the selector"
            )
        share_weights(module, config.linear_bits if isinstance(module, nn.Linear) else config.conv_bits)
    _train(model, ctx, config.cluster_epochs, config.cluster_lr, "centroids")
    make_permanent(model)
    for module in modules.values():
        module.weight.requires_grad_(True)

    out_dir = Path(ctx.out_dir) if ctx.out_dir is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        path = (out_dir or Path(tmp)) / config.filename
        stats = save_compressed(model, path, conv_gap_bits=config.conv_gap_bits, linear_gap_bits=config.linear_gap_bits)
        size = os.path.getsize(path)
    summary = summarize(stats)
    ctx.notes.append(
        f"deep compression file: {size:,} bytes ({artifact_bytes(model) / size:.1f}x smaller than shrink.save of "
        f"the same model); {summary['nonzero']:,} non-zeros, indices {summary['index_bits_per_entry']:.2f} "
        f"bits/entry (entropy {summary['index_entropy']:.2f}), gaps {summary['gap_bits_per_entry']:.2f} "
        f"(entropy {summary['gap_entropy']:.2f})" + (f"; written to {path}" if out_dir is not None else "")
    )
    setattr(model, "shrink_execution", "fp32 weights decoded from the Deep Compression file")  # noqa: B010
    setattr(model, "shrink_artifact", {"bytes": size, "digest": state_digest(model)})  # noqa: B010  (report size)
    return model
