"""Recipes: YAML naming a model, data and an ordered list of stages (each one config), run end to end.

    model: {zoo: digits_cnn}                       # or {factory: "pkg.mod:fn", checkpoint: path, kwargs: {}}
    data: {zoo: digits}                            # or {factory: "pkg.mod:fn", kwargs: {}}
    seed: 0
    stages:
      - {type: magnitude_pruning, sparsity: 0.8}
      - {type: finetune, epochs: 3, name: "pruned 80% + fine-tune"}
    evaluate: {batch_sizes: [1, 8], threads: 2}

Every error names the file, the stage (index and type) and the field.
"""

from __future__ import annotations

import importlib
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import torch
import yaml
from torch import nn

from shrink.api import Context, apply
from shrink.config import Config, config_from_dict, format_validation_error
from shrink.data import DataBundle
from shrink.errors import ConfigError, ModelError
from shrink.eval.harness import evaluate
from shrink.export.artifact import save
from shrink.report.html import write_html
from shrink.report.table import Report

__all__ = ["Recipe", "load_recipe", "run", "RunResult"]

#: stage families that may appear at most once in a recipe
_ONCE = {"quantize": "quantizing an already quantized model", "deep_compress": "deep-compressing twice"}


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")


class ModelSpec(_Strict):
    zoo: str | None = None
    factory: str | None = None
    checkpoint: str | None = None
    kwargs: dict[str, Any] = {}


class DataSpec(_Strict):
    zoo: str | None = None
    factory: str | None = None
    kwargs: dict[str, Any] = {}


class EvalSpec(_Strict):
    batch_sizes: list[int] = [1]
    threads: int = pydantic.Field(2, ge=1)
    reps: int = pydantic.Field(20, ge=1)
    warmup: int = pydantic.Field(5, ge=0)


class Recipe(_Strict):
    model: ModelSpec
    data: DataSpec
    stages: list[dict[str, Any]] = []
    seed: int = 0
    evaluate: EvalSpec = EvalSpec()
    title: str = "shrink report"

    def configs(self, where: str = "recipe") -> list[tuple[str | None, Config]]:
        out, seen = [], {}
        for i, raw in enumerate(self.stages):
            if not isinstance(raw, dict):
                raise ConfigError(f"{where}: stage {i + 1}: expected a mapping, got {type(raw).__name__}")
            raw = dict(raw)
            name = raw.pop("name", None)
            cfg = config_from_dict(raw, where=f"{where}: stage {i + 1}")
            if cfg.family in _ONCE and cfg.family in seen:
                raise ConfigError(f"{where}: stage {i + 1} ({cfg.type_name}) contradicts stage {seen[cfg.family]}: "
                                  f"{_ONCE[cfg.family]} is not supported")
            seen.setdefault(cfg.family, i + 1)
            out.append((name, cfg))
        return out


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Parse and validate a recipe file (stages included); errors name the file, stage and field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping with 'model', 'data' and 'stages'")
    for key in ("model", "data"):
        if key not in data:
            raise ConfigError(f"{path}: missing '{key}'")
    try:
        recipe = Recipe(**data)
    except pydantic.ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where=str(path))) from None
    for key, spec in (("model", recipe.model), ("data", recipe.data)):
        if (spec.zoo is None) == (spec.factory is None):
            raise ConfigError(f"{path}: {key}: give exactly one of 'zoo' or 'factory'")
    recipe.configs(where=str(path))  # validate stages now, before any work
    return recipe


def _import_factory(spec: str, where: str) -> Callable[..., Any]:
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ConfigError(f"{where}: factory must look like 'package.module:function', got {spec!r}")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{where}: cannot import factory {spec!r}: {exc}") from None


def _load_checkpoint(model: nn.Module, path: str, where: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{where}: checkpoint {path!r} not found")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        state = torch.load(p, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{where}: checkpoint {path!r} does not match the model: {exc}") from None


def build_model(spec: ModelSpec, where: str) -> nn.Module:
    from shrink.zoo import MODELS

    if spec.zoo is not None:
        if spec.zoo not in MODELS:
            raise ConfigError(f"{where}: unknown zoo model {spec.zoo!r} (known: {', '.join(MODELS)})")
        model = MODELS[spec.zoo](**spec.kwargs)
    else:
        model = _import_factory(spec.factory or "", where)(**spec.kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{where}: the model factory returned {type(model).__name__}, not a torch.nn.Module")
    if spec.checkpoint:
        _load_checkpoint(model, spec.checkpoint, where)
    return model.eval()


def build_data(spec: DataSpec, where: str) -> DataBundle:
    from shrink.zoo import DATA

    if spec.zoo is not None:
        if spec.zoo not in DATA:
            raise ConfigError(f"{where}: unknown zoo data {spec.zoo!r} (known: {', '.join(DATA)})")
        data = DATA[spec.zoo](**spec.kwargs)
    else:
        data = _import_factory(spec.factory or "", where)(**spec.kwargs)
    if not isinstance(data, DataBundle):
        raise ConfigError(f"{where}: the data factory returned {type(data).__name__}, not a shrink.data.DataBundle")
    return data


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class RunResult:
    def __init__(self, model: nn.Module, report: Report, out_dir: Path) -> None:
        self.model, self.report, self.out_dir = model, report, out_dir


def run(recipe_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, resume: bool = False,
        progress: bool = True) -> RunResult:
    """Run a recipe: each stage on a copy of the previous model; write the final model (``model.shrink``),
    ``report.json`` and ``report.html`` to ``out_dir``.

    Training stages checkpoint every epoch under ``out_dir/checkpoints``; with ``resume=True`` a killed run
    continues from there (deterministic stages are re-run, finished training stages are restored).
    """
    recipe = load_recipe(recipe_path)
    where = str(recipe_path)
    out = Path(out_dir)
    checkpoints = out / "checkpoints"
    if not resume and checkpoints.exists():
        shutil.rmtree(checkpoints)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(recipe.seed)
    model = build_model(recipe.model, f"{where}: model")
    data = build_data(recipe.data, f"{where}: data")
    ctx = Context(example_inputs=data.example_inputs, train=data.train, calibration=data.calibration, val=data.val,
                  teacher=model, metric=data.metric, progress=progress, out_dir=out)
    variants: dict[str, Any] = {"baseline": model}
    notes: dict[str, list[str]] = {}
    current = model
    for i, (name, cfg) in enumerate(recipe.configs(where)):
        ctx.checkpoint_dir = checkpoints / f"{i + 1:02d}-{cfg.type_name}"
        ctx.notes = []
        current = apply(current, cfg, ctx)
        label = name or f"{i + 1}. {cfg.type_name}"
        if cfg.family != "export":
            variants[label] = current
            notes[label] = list(ctx.notes)
        for extra_name, extra in ctx.extra_models.items():
            variants[extra_name] = extra
            notes[extra_name] = list(ctx.notes)
        ctx.extra_models.clear()
    save(current, out / "model.shrink")
    ev = recipe.evaluate
    report = evaluate(variants, data, batch_sizes=ev.batch_sizes, threads=ev.threads, reps=ev.reps,
                      warmup=ev.warmup, notes=notes, progress=progress, title=recipe.title)
    report.to_json(out / "report.json")
    write_html(report, out / "report.html")
    return RunResult(current, report, out)
