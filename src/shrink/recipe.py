"""Recipes: YAML naming a model, data and an ordered list of stages (each one config), run end to end.

    model: {zoo: digits_cnn}                       # or {factory: "pkg.mod:fn", checkpoint: path, kwargs: {}}
    data: {zoo: digits}                            # or {factory: "pkg.mod:fn", kwargs: {}}
    seed: 0
    stages:
      - {type: magnitude_pruning, sparsity: 0.8}
      - {type: finetune, epochs: 3, name: "pruned 80% + fine-tune"}
    evaluate: {batch_sizes: [1, 8], threads: 2}

Every error names the file, the stage (index and type) and the field. Factories are imported with the recipe's
folder and the current directory on ``sys.path`` (a user's own package needs no PYTHONPATH); a relative
``checkpoint`` is read from the recipe's folder. Before the first stage runs, every stage's data needs are checked.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pydantic
import torch
import yaml
from torch import nn

from shrink.api import Context, apply
from shrink.config import Config, format_validation_error
from shrink.data import check_finite
from shrink.errors import ConfigError, ShrinkError
from shrink.eval.harness import MAX_BATCH, evaluate
from shrink.export.artifact import save
from shrink.recipe_checks import chance_level_note, check_stage_needs
from shrink.recipe_sources import build_data, build_model, check_kwargs, import_factory, resolve_checkpoint
from shrink.report.html import write_html
from shrink.report.table import Report
from shrink.resume import check_resumable
from shrink.train.distributed import barrier, is_main, setup

__all__ = ["Recipe", "load_recipe", "run", "RunResult"]

#: stage families that may appear at most once in a recipe
_ONCE = {"quantize": "quantizing an already quantized model", "deep_compress": "deep-compressing twice"}


@dataclass(frozen=True)
class Stage:
    label: str  # the stage's name, or "N. type"
    source: str  # label of the stage whose model it starts from ("baseline" for the original)
    config: Config
    named: bool


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
    batch_sizes: list[Annotated[int, pydantic.Field(ge=1, le=MAX_BATCH)]] = pydantic.Field([1], min_length=1)
    threads: int = pydantic.Field(2, ge=1)
    reps: int = pydantic.Field(20, ge=1)
    warmup: int = pydantic.Field(5, ge=0)
    #: the axis latency batches repeat the example along: 1 for a time-major model's (time, batch, features)
    batch_axis: Literal[0, 1] = 0


class Recipe(_Strict):
    model: ModelSpec
    data: DataSpec
    stages: list[dict[str, Any]] = []
    seed: int = pydantic.Field(0, ge=0, lt=2**32)  # numpy's seeds are 32-bit
    evaluate: EvalSpec = EvalSpec()  # type: ignore[call-arg]  # pydantic fills the defaults
    title: str = "shrink report"
    #: line of each stage in the recipe file (filled by load_recipe), for error messages
    _stage_lines: list[int] = pydantic.PrivateAttr(default_factory=list)
    #: the recipe file's folder (filled by load_recipe): factories import from it, a relative checkpoint is in it
    _folder: Path | None = pydantic.PrivateAttr(default=None)

    @pydantic.field_validator("stages", mode="before")
    @classmethod
    def _expand_presets(cls, stages: Any) -> Any:
        return [stage for _, stage in expand_presets(stages)] if isinstance(stages, list) else stages

    def stage_label(self, index: int, type_name: str | None = None) -> str:
        """``stage 2 (finetune, line 7)``: how errors name a stage."""
        details = [d for d in (type_name, self._line_text(index)) if d]
        return f"stage {index + 1}" + (f" ({', '.join(details)})" if details else "")

    def _line_text(self, index: int) -> str:
        return f"line {self._stage_lines[index]}" if index < len(self._stage_lines) else ""

    def configs(self, where: str = "recipe") -> list[Stage]:
        """The validated stages. A stage runs on the previous stage's model, or on the model of the stage named by
        its ``from:`` key ("baseline" or an earlier stage's ``name``), so one recipe can compare branches."""
        out: list[Stage] = []
        lineage: dict[str, _Chain] = {"baseline": {}}
        previous = "baseline"
        for i, raw in enumerate(self.stages):
            at = f" (at {self._line_text(i)})" if self._line_text(i) else ""
            raw = dict(raw)
            name, source = raw.pop("name", None), raw.pop("from", None)
            for key, value in (("name", name), ("from", source)):
                if value is not None and not isinstance(value, str):
                    raise ConfigError(f"{where}: stage {i + 1}: field '{key}' must be a string, got {value!r}{at}")
            if "type" in raw and not isinstance(raw["type"], str):
                raise ConfigError(
                    f"{where}: stage {i + 1}: field 'type' must be a stage name (a string), got {raw['type']!r}{at}"
                )
            from shrink.stages import config_from_dict  # imports every family: only when a recipe is read

            try:
                cfg = config_from_dict(raw, where=f"{where}: stage {i + 1}")
            except ConfigError as exc:
                raise ConfigError(f"{exc}{at}") from None
            label = name or f"{i + 1}. {cfg.type_name}"
            if label in lineage:
                raise ConfigError(f"{where}: stage {i + 1}: name {label!r} is used twice (field 'name'){at}")
            source = source or previous
            if source not in lineage:
                known = ", ".join(repr(k) for k in lineage)
                raise ConfigError(
                    f"{where}: stage {i + 1}: 'from: {source}' names no earlier stage "
                    f"(known: {known}) (field 'from'){at}"
                )
            chain = {family: list(stages) for family, stages in lineage[source].items()}
            conflict = _order_conflict(chain, cfg)
            if conflict is not None:
                raise ConfigError(
                    f"{where}: {self.stage_label(i, cfg.type_name)} {conflict[1].format(self.stage_label(conflict[0]))}"
                    " (field 'type')"
                )
            chain.setdefault(cfg.family, []).append((i, cfg))
            lineage[label] = chain
            out.append(Stage(label=label, source=source, config=cfg, named=name is not None))
            if cfg.family != "export":
                previous = label
        return out

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the run that wrote the checkpoints."""
        return {
            "model": self.model.model_dump(mode="json"),
            "data": self.data.model_dump(mode="json"),
            "seed": self.seed,
            "stages": [{"from": st.source, **st.config.to_dict()} for st in self.configs()],
        }


#: the stages a stage's model went through: family -> (stage index, config), in order
_Chain = dict[str, list[tuple[int, Config]]]


def _whole_types(cfg: Config) -> frozenset[str] | None:
    """The layer types of which ``cfg`` takes every layer ("*": all types), or None when its selector narrows the
    layers by name (then only the run can tell which layers two stages share)."""
    sel = getattr(cfg, "selector", None)
    if sel is None:
        return frozenset({"*"})
    if tuple(sel.include) != ("re:.*",) or sel.ignore:
        return None
    return frozenset(sel.types) or frozenset({"*"})


def _share_layers(a: Config, b: Config) -> bool:
    """Whether two stages surely select some of the same layers."""
    ta, tb = _whole_types(a), _whole_types(b)
    return ta is not None and tb is not None and ("*" in ta or "*" in tb or bool(ta & tb))


def _order_conflict(chain: _Chain, cfg: Config) -> tuple[int, str] | None:
    """(index of the earlier stage, why: a format string for its label) when ``cfg`` cannot follow ``chain``: a
    preparation stage (smooth_quant, awq, gptq, signround) after a stage of its family quantizing the same layers, or
    a second quantization / deep compression of the same layers."""
    schemes = [(n, c) for n, c in chain.get(cfg.family, []) if not c.prepares]
    for n, earlier in schemes:
        if cfg.prepares and _share_layers(earlier, cfg):
            return n, (
                f"comes after {{}}, which quantizes the same layers: {cfg.type_name} prepares a float model for the "
                f"{cfg.family} stage, so list it before that stage"
            )
        if cfg.family in _ONCE and not cfg.prepares and _share_layers(earlier, cfg):
            return n, f"contradicts {{}}: {_ONCE[cfg.family]} is not supported"
    return None


def expand_presets(stages: list[Any]) -> list[tuple[int, Any]]:
    """Each stage as ``(index of the recipe item it came from, stage)``, a ``{preset: NAME}`` item replaced by the
    preset's stages (:mod:`shrink.presets`); its ``from:`` goes to the first of them."""
    out: list[tuple[int, Any]] = []
    for i, raw in enumerate(stages):
        if not (isinstance(raw, dict) and "preset" in raw):
            out.append((i, raw))
            continue
        extra = sorted(set(raw) - {"preset", "from"})
        if extra:
            raise ConfigError(f"stage {i + 1}: a preset item takes only 'preset' and 'from', got {extra}")
        from shrink.presets import get  # imports the quant family: only when a recipe names a preset

        expanded = [cfg.to_dict() for cfg in get(raw["preset"])]
        if "from" in raw:
            expanded[0]["from"] = raw["from"]
        out += [(i, stage) for stage in expanded]
    return out


def _yaml_error(path: Path, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return ConfigError(f"{path}: malformed YAML{at}: {problem}")


def _check_duplicate_keys(node: yaml.Node | None, path: Path, seen: set[int] | None = None) -> None:
    """YAML lets a later key silently replace an earlier one: a recipe refuses any key given twice in one mapping
    (keys compared as YAML resolves them, so ``1`` and ``"1"`` differ; an alias is checked once)."""
    seen = set() if seen is None else seen
    if node is None or id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            ident = (str(getattr(key, "tag", "")), str(getattr(key, "value", key)))
            line = key.start_mark.line + 1
            if ident in first:
                raise ConfigError(f"{path}: line {line}: key '{ident[1]}' given twice in one mapping (first at line "
                                  f"{first[ident]}); YAML would keep only the last value")  # fmt: skip
            first[ident] = line
            _check_duplicate_keys(value, path, seen)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicate_keys(item, path, seen)


def _stage_lines(root: yaml.Node | None) -> list[int]:
    """1-based line of each item of the top-level ``stages`` list."""
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if getattr(key, "value", None) == "stages" and isinstance(value, yaml.SequenceNode):
                return [item.start_mark.line + 1 for item in value.value]
    return []


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Parse and validate a recipe file (stages, zoo names, factories, checkpoint path) before any work is done;
    errors name the file, the stage (number, type and line) and the field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        lines = _stage_lines(root)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc})") from None
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping with 'model', 'data' and 'stages'")
    _check_duplicate_keys(root, path)
    for key in ("model", "data"):
        if key not in data:
            raise ConfigError(f"{path}: missing '{key}' (e.g. '{key}: {{zoo: {_EXAMPLE_ZOO[key]}}}')")
    try:
        recipe = Recipe(**data)
    except pydantic.ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where=str(path), known=Recipe.model_fields)) from None
    if lines and isinstance(data.get("stages"), list) and len(lines) == len(data["stages"]):
        lines = [lines[i] for i, _ in expand_presets(data["stages"])]  # a preset's stages share its line
    recipe._stage_lines, recipe._folder = lines, path.parent
    _check_sources(recipe, str(path))
    recipe.configs(where=str(path))  # validate stages now, before any work
    return recipe


_EXAMPLE_ZOO = {"model": "digits_cnn", "data": "digits"}


def _check_sources(recipe: Recipe, where: str) -> None:
    from shrink.zoo import DATA, MODELS

    for key, spec, known in (("model", recipe.model, MODELS), ("data", recipe.data, DATA)):
        if (spec.zoo is None) == (spec.factory is None):
            raise ConfigError(f"{where}: {key}: give exactly one of 'zoo' or 'factory'")
        if spec.zoo is not None and spec.zoo not in known:
            raise ConfigError(f"{where}: {key}: field 'zoo': unknown {spec.zoo!r} (known: {', '.join(known)})")
        factory = known[spec.zoo] if spec.zoo is not None else None
        if spec.factory is not None:
            factory = import_factory(spec.factory, f"{where}: {key}: field 'factory'", recipe._folder)
        check_kwargs(factory, spec.kwargs, f"{where}: {key}: field 'kwargs'")
    checkpoint = recipe.model.checkpoint
    if checkpoint is not None and not resolve_checkpoint(checkpoint, recipe._folder).is_file():
        raise ConfigError(
            f"{where}: model: field 'checkpoint': file {checkpoint!r} not found"
            + (f" (a relative path is read from the recipe's folder, {recipe._folder})" if recipe._folder else "")
        )


def _check_out_dir(out: Path) -> None:
    """Create the output directory and prove it writable before any work, so a bad ``--out`` fails in one line."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output directory {out}: exists and is not a directory")
    probe = out / f".shrink-write-test.{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"output directory {out}: cannot write there ({reason})") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class RunResult:
    def __init__(self, model: nn.Module, report: Report, out_dir: Path) -> None:
        self.model, self.report, self.out_dir = model, report, out_dir


#: ``on_stage(number, total, label, seconds)``: called as each step starts (``seconds`` None) and ends. The steps are
#: the recipe's stages, then "evaluate" (number ``total``).
StageCallback = Callable[[int, int, str, float | None], None]


def run(
    recipe_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool = True,
    keep_checkpoints: bool = False,
    on_stage: StageCallback | None = None,
) -> RunResult:
    """Run a recipe: each stage on a copy of the previous model; write the final model (``model.shrink``),
    ``report.json`` and ``report.html`` to ``out_dir`` (each atomically).

    Training stages checkpoint every epoch under ``out_dir/checkpoints``; with ``resume=True`` a killed run
    continues from there (deterministic stages are re-run, finished training stages are restored) and ends with the
    same model file as an uninterrupted run. Resuming with a different recipe is an error. After a successful run the
    checkpoints are deleted unless ``keep_checkpoints``; ``on_stage`` hears of each step (see :data:`StageCallback`).
    """
    recipe = load_recipe(recipe_path)
    where = str(recipe_path)
    out = Path(out_dir)
    setup()  # under torchrun: join the process group now, so that only rank 0 writes, prints and shows bars
    progress = progress and is_main()
    _check_out_dir(out)
    checkpoints = out / "checkpoints"
    if is_main():
        if not resume and checkpoints.exists():
            shutil.rmtree(checkpoints)
        check_resumable(recipe.fingerprint(), checkpoints, where)
    barrier()
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(recipe.seed)
    model = build_model(recipe.model, f"{where}: model", progress=progress, folder=recipe._folder)
    data = build_data(recipe.data, f"{where}: data", folder=recipe._folder)
    check_finite(data.example_inputs, f"{where}: data: example_inputs")
    stages = recipe.configs(where)
    labelled = [(recipe.stage_label(i, st.config.type_name), st.config) for i, st in enumerate(stages)]
    check_stage_needs(labelled, data, model, where)
    # The stages' random numbers must not depend on how the model and data were built (e.g. a cache hit or miss).
    seed_everything(recipe.seed)
    ctx = Context(
        example_inputs=data.example_inputs,
        train=data.train,
        calibration=data.calibration,
        val=data.val,
        teacher=model,
        metric=data.metric,
        progress=progress,
        out_dir=out,
    )
    tell = on_stage if on_stage is not None and is_main() else (lambda *_: None)
    current, variants, notes = _run_stages(recipe, stages, model, ctx, checkpoints, where, tell)
    if not is_main():  # under torchrun only rank 0 evaluates and writes
        return RunResult(current, Report(rows=[], metric=data.metric), out)
    save(current, out / "model.shrink")
    report = _evaluate_and_write(recipe, recipe_path, variants, notes, model, data, out, progress, tell, len(stages))
    if not keep_checkpoints and checkpoints.exists():
        shutil.rmtree(checkpoints)
    return RunResult(current, report, out)


def _run_stages(
    recipe: Recipe,
    stages: list[Any],
    model: nn.Module,
    ctx: Context,
    checkpoints: Path,
    where: str,
    tell: StageCallback,
) -> tuple[nn.Module, dict[str, Any], dict[str, list[str]]]:
    """Every stage in order, each on its source model: the last model, every variant to evaluate, their notes."""
    variants: dict[str, Any] = {"baseline": model}
    models: dict[str, nn.Module] = {"baseline": model}
    notes: dict[str, list[str]] = {}
    current = model
    for i, stage in enumerate(stages):
        cfg = stage.config
        ctx.checkpoint_dir = checkpoints / f"{i + 1:02d}-{cfg.type_name}"
        ctx.notes = []
        label = stage.label if stage.named else cfg.type_name
        tell(i + 1, len(stages) + 1, label, None)
        started = time.perf_counter()
        current = _run_stage(models[stage.source], cfg, ctx, f"{where}: {recipe.stage_label(i, cfg.type_name)}")
        tell(i + 1, len(stages) + 1, label, time.perf_counter() - started)
        if cfg.family != "export":
            models[stage.label] = variants[stage.label] = current
            notes[stage.label] = list(ctx.notes)
        for extra_name, extra in ctx.extra_models.items():
            key = stage.label if stage.named else extra_name
            key = key if key not in variants else f"{key} (stage {i + 1})"
            variants[key] = extra
            notes[key] = list(ctx.notes)
        ctx.extra_models.clear()
    return current, variants, notes


def _evaluate_and_write(
    recipe: Recipe,
    recipe_path: str | os.PathLike[str],
    variants: dict[str, Any],
    notes: dict[str, list[str]],
    baseline: nn.Module,
    data: Any,
    out: Path,
    progress: bool,
    tell: StageCallback,
    n_stages: int,
) -> Report:
    """Evaluate every variant together and write ``report.json`` and ``report.html``."""
    ev = recipe.evaluate
    tell(n_stages + 1, n_stages + 1, f"evaluate {len(variants)} models", None)
    started = time.perf_counter()
    report = evaluate(
        variants,
        data,
        batch_sizes=ev.batch_sizes,
        threads=ev.threads,
        reps=ev.reps,
        warmup=ev.warmup,
        batch_axis=ev.batch_axis,
        notes=notes,
        progress=progress,
        title=recipe.title,
    )
    chance = chance_level_note(report, baseline, data.example_inputs)
    if chance:
        report.row("baseline").notes.append(chance)
    report.to_json(out / "report.json")
    write_html(report, out / "report.html", recipe=Path(recipe_path).read_text(encoding="utf-8"))
    tell(n_stages + 1, n_stages + 1, f"evaluate {len(variants)} models", time.perf_counter() - started)
    return report


def _run_stage(model: nn.Module, cfg: Config, ctx: Context, where: str) -> nn.Module:
    """Run one stage; a shrink error is re-raised with the file and stage in front, other errors get a note."""
    try:
        return apply(model, cfg, ctx)
    except ShrinkError as exc:
        raise type(exc)(f"{where}: {exc}") from exc
    except Exception as exc:
        exc.add_note(f"while running {where}")
        raise
