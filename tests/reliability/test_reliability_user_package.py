"""A recipe on a user's own package whose data lacks what a stage needs: one error naming the stage, before any
stage has run."""

from __future__ import annotations

import sys

import pytest

from shrink.errors import ConfigError
from shrink.recipe import run

DATA = """
import torch

from shrink.data import DataBundle


class Untouchable:
    def __iter__(self):
        raise RuntimeError("training data was read before the recipe's checks")


def bundle(train=False):
    x = torch.randn(8, 4)
    y = torch.zeros(8, dtype=torch.long)
    return DataBundle(test=[(x, y)], example_inputs=x[:1], train=Untouchable() if train else None)
"""


@pytest.fixture
def project(tmp_path):
    pkg = tmp_path / "relpkg_needs"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text("from torch import nn\n\n\ndef build():\n    return nn.Linear(4, 3)\n")
    (pkg / "data.py").write_text(DATA)
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("relpkg_needs")]:
        del sys.modules[name]


def _recipe(folder, stages: str, train: bool):
    path = folder / "needs.yaml"
    path.write_text(
        "model: {factory: 'relpkg_needs.models:build'}\n"
        f"data: {{factory: 'relpkg_needs.data:bundle', kwargs: {{train: {str(train).lower()}}}}}\n"
        "stages:\n" + "".join(f"  - {s}\n" for s in stages.split(";"))
    )
    return path


def test_stage_needs_checked_before_any_stage_runs(project, user_sees):
    cases = (
        (
            "int8_static after fine-tuning, data without calibration",
            "{type: finetune, epochs: 1};{type: int8_static}",
            True,
            "stage 2 (int8_static, line 5) needs calibration data",
        ),
        (
            "finetune stage, data without a training split",
            "{type: finetune, epochs: 1}",
            False,
            "stage 1 (finetune, line 4) needs train data",
        ),
        (
            "taylor channel pruning, data with neither train nor calibration",
            "{type: channel_pruning, ratio: 0.3, importance: taylor}",
            False,
            "needs train or calibration data",
        ),
    )
    for tried, stages, train, fragment in cases:
        user_sees(
            "recipe",
            tried,
            lambda stages=stages, train=train: run(_recipe(project, stages, train), project / "out", progress=False),
            ConfigError,
            "needs.yaml",
            fragment,
            "nothing was run",
        )
