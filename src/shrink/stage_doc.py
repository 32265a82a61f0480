"""The stage reference: every recipe stage type with its fields (type, default, one line of doc).

A field's doc is the ``#:`` comment above it in the config class (or its pydantic ``description``); its type shows
the pydantic constraints (``int, 2 ≤ x ≤ 8``). Used by ``shrink stages [TYPE]`` and the docs.
"""

from __future__ import annotations

import difflib
import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from shrink.config import Config
from shrink.errors import ConfigError
from shrink.stages import registered_types

__all__ = ["FieldDoc", "field_docs", "describe", "summary", "stage_class", "reference_markdown", "COMMON"]

#: docs of fields that mean the same in every stage that has them (a ``#:`` comment in the class wins)
COMMON: dict[str, str] = {
    "selector": "which layers the stage applies to: names, 're:' regexes or module types, with 'ignore'",
    "lr": "learning rate of the training steps",
    "optimizer": "optimizer of the training steps ('adam' is AdamW)",
    "epochs": "training epochs over the recipe's train split",
    "seed": "random seed of this stage (initialisation, shuffling, sampling)",
    "weight_decay": "decoupled weight decay of the optimizer",
    "scope": "'global': one ranking over all selected layers; 'layer' / 'uniform': the same fraction in each one",
    "calibration_batches": "batches of calibration data to read (None: all of them)",
    "energy": "smallest rank keeping this fraction of the squared singular values",
    "param_fraction": "largest rank whose factors keep at most this fraction of the layer's parameters",
    "rank": "fixed rank (give exactly one of energy, param_fraction and rank)",
    "sparsity": "fraction of the selected weights set to zero",
    "criterion": "how a weight's importance is scored before pruning",
    "filename": "file written in the run's output directory",
    "hints": "intermediate-feature losses added to the distillation loss",
    "temperature": "softmax temperature of the soft targets (loss scaled by T²)",
    "regularization": "penalty added to the loss while training towards sparsity",
    "reg_strength": "weight of that penalty",
    "weight_observer": "how the weights' quantization range is chosen",
    "weight_bits": "bits per weight",
    "activation_bits": "bits per activation",
    "sparsities": "candidate sparsities per layer",
    "profile": "hardware profile whose latency / energy model is the budget's cost (a name or a YAML file)",
    "sensitivity_batches": "batches used to measure each layer's sensitivity",
    "observer": "how activation ranges are calibrated",
    "per_channel": "one scale per output channel (else one per tensor)",
    "opset": "ONNX opset version of the exported graph",
    "threads": "intra-op threads of the ONNX Runtime session",
    "alpha": "weight of the soft-target loss; 1 - alpha weighs the hard labels",
    "student_zoo": "zoo model to train as the student (None: the current model)",
    "ratio": "fraction of channels removed in each prunable group",
    "round_to": "kept channel counts are rounded to a multiple of this (SIMD-friendly)",
    "n": "weights kept in each group of m",
    "m": "group size of the N:M pattern",
    "group_size": "weights sharing one scale",
}

_FIELD = re.compile(r"^\s+(\w+)\s*:")
_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))


@dataclass(frozen=True)
class FieldDoc:
    name: str
    type: str
    default: str
    doc: str


def stage_class(name: str) -> type[Config]:
    """The config class of stage type ``name``; an unknown name is an error listing the closest ones."""
    types_ = registered_types()
    if name not in types_:
        close = difflib.get_close_matches(name, types_, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `shrink stages` lists them"
        raise ConfigError(f"stages: unknown stage type {name!r}{hint}")
    return types_[name]


def _comments(cls: type) -> dict[str, str]:
    """``#:`` comments written above each field in the class bodies of ``cls`` and its bases."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, Config)):
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        pending: list[str] = []
        for line in lines:
            stripped = line.strip()
            if stripped.startswith("#:"):
                pending.append(stripped[2:].strip())
                continue
            match = _FIELD.match(line)
            if match and pending:
                out[match.group(1)] = " ".join(pending)
            pending = []
    return out


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        inner, *meta = typing.get_args(annotation)
        return _with_bounds(_type_name(inner), meta)
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _with_bounds(name: str, metadata: list[Any]) -> str:
    bounds = []
    for item in metadata:
        for source in [item, *getattr(item, "metadata", [])]:
            bounds += [f"{sign} {getattr(source, attr)}" for attr, sign in _BOUNDS if hasattr(source, attr)]
    return f"{name} ({', '.join(bounds)})" if bounds else name


def _default(info: FieldInfo) -> str:
    if info.default is PydanticUndefined:
        return "required" if info.default_factory is None else repr(info.default_factory())  # type: ignore[call-arg]
    value = info.default
    if isinstance(value, Config) or hasattr(value, "model_dump"):
        return repr(value.model_dump(mode="json", exclude_defaults=True) or "default")
    return repr(value)


def field_docs(cls: type[Config]) -> list[FieldDoc]:
    """Every field of ``cls`` in declaration order."""
    comments = _comments(cls)
    out = []
    for name, info in cls.model_fields.items():
        kind = _with_bounds(_type_name(info.annotation), list(info.metadata))
        doc = info.description or comments.get(name) or COMMON.get(name, "")
        out.append(FieldDoc(name, kind, _default(info), doc))
    return out


def _first_line(cls: type) -> str:
    """The docstring's first paragraph on one line (runs of whitespace, the docstring's indentation, as one space)."""
    return " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())


def describe(name: str) -> str:
    """``shrink stages NAME``: the stage's summary, then one block per field (type, default, doc)."""
    cls = stage_class(name)
    lines = [f"{name} ({cls.family} stage, {cls.__module__}.{cls.__name__}, version {cls.version})", ""]
    lines += [f"  {_first_line(cls)}", "", "fields:"]
    for f in field_docs(cls):
        lines.append(f"  {f.name}: {f.type} = {f.default}")
        lines.append(f"      {f.doc or '(no description)'}")
    if not cls.model_fields:
        lines.append("  (none)")
    return "\n".join(lines)


def summary(width: int | None = None) -> str:
    """``shrink stages``: one line per stage type (name, family, first line of its doc), cut to ``width``."""
    rows = [(name, cls.family, _first_line(cls)) for name, cls in registered_types().items()]
    w_name = max(len(r[0]) for r in rows)
    w_family = max(len(r[1]) for r in rows)
    lines = []
    for name, family, doc in rows:
        line = f"{name:{w_name}}  {family:{w_family}}  {doc}"
        lines.append(line if width is None or len(line) <= width else line[: width - 1] + "…")
    lines.append("")
    lines.append("`shrink stages TYPE` shows a stage's fields with their types, defaults and docs.")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def reference_markdown() -> str:
    """The whole stage reference as Markdown: per stage type its summary and a table of its fields."""
    out = [
        "# Recipe stages",
        "",
        "Generated from the config classes by `make docs` (`shrink stages TYPE` prints the same).",
        "",
    ]
    for name, cls in registered_types().items():
        out += [f"## {name}", "", f"*{cls.family}* · `{cls.__module__}.{cls.__name__}`", "", _first_line(cls), ""]
        out += ["| field | type | default | doc |", "|---|---|---|---|"]
        out += [f"| `{f.name}` | {_cell(f.type)} | `{_cell(f.default)}` | {_cell(f.doc)} |" for f in field_docs(cls)]
        out.append("")
    return "\n".join(out)
