"""Data-free static quantization (``zeroq``, Cai et al., CVPR 2020): distill calibration inputs from the model's
own BatchNorm statistics (:mod:`shrink.quant.algorithms.zeroq_data`), then run static PTQ
(:class:`Int8Static`) calibrated on them. The user's training, validation and calibration data are never read.
"""

from __future__ import annotations

import pydantic
import torch
from torch import nn

from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.errors import ConfigError
from shrink.quant.algorithms.zeroq_data import distill_inputs
from shrink.quant.layers.convert import check_weights
from shrink.quant.static import Int8Static, quantize_static

__all__ = ["ZeroQ", "zeroq_quantize"]


@register("zeroq", family="quantize")
class ZeroQ(Config):
    """Static PTQ calibrated on inputs synthesized to match the BatchNorm statistics (no real data)."""

    #: synthetic calibration inputs to distill
    num_samples: int = pydantic.Field(128, ge=1)
    #: synthetic inputs optimised together; also the calibration batch size
    batch_size: int = pydantic.Field(32, ge=1)
    #: Adam steps on each batch of synthetic inputs (lr is their learning rate)
    iterations: int = pydantic.Field(200, ge=1)
    #: Adam learning rate of the synthetic inputs (not of the model, which is not trained)
    lr: float = pydantic.Field(0.2, gt=0)
    #: optional prior on the input's own statistics (e.g. 0 / 1 for normalized images); None = BN layers only
    input_mean: float | None = None
    #: target std of the synthetic inputs, with input_mean (give both or neither)
    input_std: float | None = pydantic.Field(None, gt=0)
    seed: int = 0
    #: Int8Static's defaults (validated from no keys: mypy, without pydantic's plugin, sees no field defaults)
    ptq: Int8Static = Int8Static.model_validate({})


def zeroq_quantize(model: nn.Module, config: ZeroQ, ctx: Context) -> nn.Module:
    """Synthesize calibration inputs from ``model`` alone and quantize it statically on them (in place)."""
    example = ctx.example_inputs
    if not isinstance(example, torch.Tensor) or example.dim() < 2:
        raise ConfigError(
            f"zeroq: needs example_inputs, a batched tensor, to know the input shape (got {type(example).__name__})"
        )
    if (config.input_mean is None) != (config.input_std is None):
        raise ConfigError("zeroq: give both input_mean and input_std, or neither")
    check_weights(model)
    history: list[float] = []
    synthetic = distill_inputs(
        model,
        tuple(example.shape[1:]),
        num_samples=config.num_samples,
        batch_size=config.batch_size,
        iterations=config.iterations,
        lr=config.lr,
        input_mean=config.input_mean,
        input_std=config.input_std,
        seed=config.seed,
        history=history,
    )
    batches = list(synthetic.split(config.batch_size))
    # a fresh context: only the synthetic batches and the example input's shape reach the static quantizer
    inner = Context(example_inputs=torch.zeros_like(example), calibration=batches, progress=ctx.progress)
    model = quantize_static(model, config.ptq, inner)
    ctx.notes.append(
        f"zeroq: calibrated on {len(synthetic)} synthetic inputs distilled from BatchNorm statistics "
        f"({config.iterations} iterations, BN-statistics loss {history[0]:.3g} -> {history[-1]:.3g}); "
        "no real data used"
    )
    ctx.notes.extend(inner.notes)
    return model


implements(ZeroQ)(zeroq_quantize)
