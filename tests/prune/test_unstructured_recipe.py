"""recipes/prune_unstructured.yaml runs end to end (epochs cut to 1 so the test stays short)."""

import json
from pathlib import Path

import pytest
import yaml

from shrink.recipe import load_recipe, run

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "prune_unstructured.yaml"


def test_recipe_is_valid_as_shipped():
    recipe = load_recipe(RECIPE)
    assert [s.config.type_name for s in recipe.configs()] == ["gradual_pruning", "iterative_pruning"]


@pytest.mark.slow
def test_recipe_runs_in_bounded_form(tmp_path):
    data = yaml.safe_load(RECIPE.read_text())
    gradual, iterative = data["stages"]
    gradual.update(epochs=1, pruning_steps=1)
    iterative.update(cycles=1, epochs_per_cycle=1)
    data["evaluate"] = {"batch_sizes": [1], "reps": 2, "warmup": 1}
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump(data))
    result = run(small, tmp_path / "out", progress=False)
    rows = {r["name"]: r for r in json.loads((tmp_path / "out" / "report.json").read_text())["rows"]}
    base, final = rows["baseline"], rows["iterative 90%"]
    assert rows["gradual 80%"]["nonzero_params"] < 0.35 * base["nonzero_params"]
    assert final["nonzero_params"] < 0.2 * base["nonzero_params"]
    assert final["size_bytes"] <= 0.2 * base["size_bytes"]
    assert final["metrics"]["accuracy"] > 80.0
    assert (tmp_path / "out" / "model.shrink").stat().st_size == final["size_bytes"]
    assert result.report.row("iterative 90%").size_bytes == final["size_bytes"]
