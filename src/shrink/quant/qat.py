"""Quantization-aware training (``qat``): prepare → calibrate → train → convert.

* **prepare**: the selected conv / linear layers become :mod:`~shrink.quant.layers.qat_modules` layers, with the
  following BatchNorm folded in and the following ReLU fused (patterns found by the static PTQ's
  :func:`~shrink.quant.algorithms.fold.find_patterns`);
* **calibrate**: step sizes start from observer ranges on calibration data (weights: per channel, folded);
* **train**: ``shrink.train.fit`` with cross-entropy, or Hinton distillation from the fp32 model when
  ``distill_alpha > 0``; ``method="lsq"`` learns the step sizes (Esser et al. 2020), ``"ste"`` keeps them fixed;
  BN statistics freeze after ``freeze_bn_epoch`` epochs;
* **convert**: the same :class:`~shrink.quant.layers.modules.QuantConv2d` / ``QuantLinear`` layers static PTQ produces,
  with the learned scales, so the ONNX export (QDQ, integer kernels) and the integer-only executor apply unchanged;
  :func:`shrink.save` writes their weight codes bit-packed at ``weight_bits`` (4 bits per weight at W4A4).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, Literal

import pydantic
import torch
from torch import nn
from torch.nn.utils import parametrize

from shrink._parametrize import baked_copy
from shrink.api import Context, implements
from shrink.config import Config, register
from shrink.errors import DataError
from shrink.quant.algorithms.calibrate import calibrating, run_calibration
from shrink.quant.algorithms.fold import find_patterns
from shrink.quant.algorithms.observers import make_observer
from shrink.quant.layers.convert import (
    check_weights,
    effective_weight_bits,
    quantized_layer,
    selected_layers,
    set_module,
)
from shrink.quant.layers.qat_modules import QatConv2d, QatLinear
from shrink.quant.numerics.qparams import QParams
from shrink.quant.onnx.export import attach_export
from shrink.select import Selector
from shrink.train.loop import LossFn, TaskLoss, check_distillable, fit, task_loss

__all__ = ["QAT", "prepare_qat", "convert_qat", "qat_layers", "quantization_aware_training"]


@register("qat", family="quantize")
class QAT(Config):
    """Quantization-aware training with learned (LSQ) or fixed (STE) step sizes and BN folding."""

    weight_bits: int = pydantic.Field(4, ge=2, le=8)
    activation_bits: int = pydantic.Field(4, ge=2, le=8)
    #: 'lsq' learns the weight and input step sizes in training; 'ste' keeps their calibrated values
    method: Literal["lsq", "ste"] = "lsq"
    #: observer whose calibration ranges set the initial weight and input step sizes
    init_observer: Literal["minmax", "percentile", "mse", "aciq_laplace", "aciq_gaussian"] = "mse"
    epochs: int = pydantic.Field(8, ge=0)
    lr: float = pydantic.Field(5e-4, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    #: BatchNorm statistics freeze after this many epochs (None: half of epochs, at least 1)
    freeze_bn_epoch: int | None = pydantic.Field(None, ge=0)
    #: the supervised loss: 'cross_entropy' (class labels), 'mse' or 'l1' (values to regress; no distillation)
    loss: TaskLoss = "cross_entropy"
    #: weight of Hinton's soft-target loss from the fp32 teacher (0 = the supervised loss alone)
    distill_alpha: float = pydantic.Field(0.0, ge=0.0, le=1.0)
    temperature: float = pydantic.Field(4.0, gt=0)
    calibration_batches: int = pydantic.Field(4, ge=1)
    selector: Selector = Selector()


def qat_layers(model: nn.Module) -> dict[str, QatConv2d | QatLinear]:
    """The QAT layers of a prepared model, by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (QatConv2d, QatLinear))}


@torch.no_grad()
def _init_steps(model: nn.Module, layers: dict[str, nn.Module], config: QAT, calibration: Iterable[Any]) -> dict:
    """Observe each layer's input on calibration data (original float model): ``{name: (lo, hi)}``."""

    def make(name: str):  # noqa: ANN202
        return make_observer(config.init_observer, config.activation_bits, signed=False, name=name)

    with calibrating(model, layers, make, observe_outputs=False) as observers:
        run_calibration(model, calibration, config.calibration_batches)
    return {name: obs.input.bounds() for name, obs in observers.items()}


def prepare_qat(model: nn.Module, config: QAT, calibration: Iterable[Any]) -> nn.Module:
    """Swap the selected layers (in place) for QAT layers with BN folded and ReLU fused; initialise step sizes."""
    check_weights(model)
    model.eval()
    layers = selected_layers(model, config.selector, "qat.selector")
    bounds = _init_steps(model, layers, config, calibration)
    bn_pairs, relu_pairs, _ = find_patterns(model)
    bn_of, relu_of = dict(bn_pairs), dict(relu_pairs)
    for name, layer in layers.items():
        bn = model.get_submodule(bn_of[name]) if name in bn_of else None
        # selected_layers admits only Linear / Conv2d, and find_patterns pairs them only with BatchNorm1d / 2d
        assert isinstance(layer, (nn.Conv2d, nn.Linear))
        assert bn is None or isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d))
        lo, hi = float(bounds[name][0].min()), float(bounds[name][1].max())
        signed = lo < 0
        cls = QatConv2d if isinstance(layer, nn.Conv2d) else QatLinear
        qat = cls(layer, bn, name in relu_of, config.weight_bits, config.activation_bits, signed)
        qp = qat.input_quant.qp
        qat.input_quant.init_from(torch.tensor(max(hi, -lo if signed else 0.0) / qp))
        w = qat.folded_weight().detach()
        w_obs = make_observer(
            config.init_observer, config.weight_bits, symmetric=True, signed=True, axis=0, name=f"{name}.weight"
        )
        w_obs.update(w)
        w_lo, w_hi = w_obs.bounds()
        qat.weight_quant.init_from(torch.maximum(-w_lo, w_hi) / qat.weight_quant.qp)
        if config.method == "ste":
            qat.input_quant.step.requires_grad_(False)
            qat.weight_quant.step.requires_grad_(False)
        set_module(model, name, qat)
        if bn is not None:
            set_module(model, bn_of[name], nn.Identity())
        if name in relu_of:
            set_module(model, relu_of[name], nn.Identity())
    return model


@torch.no_grad()
def convert_qat(model: nn.Module) -> nn.Module:
    """Replace every QAT layer (in place) by the static-PTQ quantized layer holding its integer weights and
    learned scales; label the model and attach the integer ONNX export."""
    for name, qat in qat_layers(model).items():
        float_layer = baked_copy(qat.layer)  # a pruned layer's masks: its zeros are in the folded weight
        assert isinstance(float_layer, (nn.Conv2d, nn.Linear))  # QAT wraps only these
        float_layer.weight.data = qat.folded_weight().detach().clone()
        bias = qat.folded_bias()
        float_layer.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None
        wq, aq = qat.weight_quant, qat.input_quant
        q = quantized_layer(float_layer, wq.bits, "static", aq.bits, qat.relu)
        n = wq.scale().numel()
        q.set_weight(float_layer.weight, QParams(wq.scale(), torch.zeros(n, dtype=torch.int32), wq.bits, True, 0))
        zp = -aq.qn  # a signed LSQ grid [-2^(b-1), 2^(b-1)-1] is the unsigned grid with zero point 2^(b-1)
        q.set_input_qparams(QParams(aq.scale().reshape(()), torch.tensor(zp, dtype=torch.int32), aq.bits, False))
        q.onnx_u8_weights = effective_weight_bits(wq.bits, "auto")[1]  # as int8_static: no u8 x s8 saturation
        set_module(model, name, q)
    return attach_export(model.eval())


def _loss(teacher: nn.Module | None, config: QAT) -> LossFn:
    """Hinton's soft-target loss from the fp32 teacher (the loss distillation and pruning use), or the config's
    supervised loss."""
    if teacher is None or config.distill_alpha == 0.0:
        return task_loss(config.loss)
    check_distillable("qat", config.loss)
    from shrink.distillation.objective import DistillLoss

    return DistillLoss(teacher, temperature=config.temperature, alpha=config.distill_alpha)


def quantization_aware_training(model: nn.Module, config: QAT, ctx: Context) -> nn.Module:
    """Prepare, train on ``ctx.train`` and convert ``model`` (in place; ``apply`` hands us a copy)."""
    if ctx.train is None:
        raise DataError("qat: needs training data (train=...)")
    teacher = (ctx.teacher or copy.deepcopy(model)) if config.distill_alpha > 0 else None
    prepare_qat(model, config, ctx.calibration if ctx.calibration is not None else ctx.train)
    layers = qat_layers(model)
    masked = sum(parametrize.is_parametrized(q.layer) for q in layers.values())
    freeze_at = config.freeze_bn_epoch if config.freeze_bn_epoch is not None else max(config.epochs // 2, 1)

    def on_epoch_end(epoch: int) -> None:
        if epoch + 1 >= freeze_at:
            for layer in layers.values():
                layer.freeze_bn()

    if freeze_at == 0:
        on_epoch_end(-1)
    loss_fn = _loss(teacher, config)
    fit(
        model,
        ctx.train,
        epochs=config.epochs,
        lr=config.lr,
        optimizer=config.optimizer,
        on_epoch_end=on_epoch_end,
        checkpoint_dir=ctx.checkpoint_dir,
        progress=ctx.progress,
        desc="qat",
        loss_fn=loss_fn,
    )
    convert_qat(model)
    w = f"W{config.weight_bits}A{config.activation_bits}"
    ctx.notes.append(
        f"qat: {len(layers)} layers trained {w} ({config.method}, {config.epochs} epochs, BN folded, "
        f"BN statistics frozen after epoch {freeze_at}"
        + (f", distilled from fp32 with alpha={config.distill_alpha}" if loss_fn is not None else "")
        + (f", pruning masks of {masked} layers kept: pruned weights stay zero" if masked else "")
        + ")"
    )
    ctx.notes.append("qat: PyTorch figures are simulated (fake-quant); the ONNX export runs integer kernels")
    return model


implements(QAT)(quantization_aware_training)
