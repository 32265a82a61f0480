import json

import pytest

from shrink.errors import ConfigError
from shrink.recipe import load_recipe, run

SMALL = """
title: small
model: {zoo: digits_cnn}
data: {zoo: digits}
stages:
  - {type: magnitude_pruning, sparsity: 0.5, name: pruned}
  - {type: finetune, epochs: 1}
  - {type: onnx_export}
evaluate: {batch_sizes: [1], reps: 3, warmup: 1}
"""


def _write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_recipe_runs_and_writes_model_and_reports(tmp_path):
    result = run(_write(tmp_path, SMALL), tmp_path / "out", progress=False)
    out = tmp_path / "out"
    assert (out / "model.shrink").stat().st_size > 0
    assert (out / "model.onnx").stat().st_size > 0
    assert "<img" in (out / "report.html").read_text()
    report = json.loads((out / "report.json").read_text())
    names = [r["name"] for r in report["rows"]]
    assert names == ["baseline", "pruned", "2. finetune", "onnxruntime (fp32)"]
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["pruned"]["nonzero_params"] < 0.6 * rows["baseline"]["nonzero_params"]
    assert rows["baseline"]["metrics"]["accuracy"] >= 98.0
    assert abs(rows["onnxruntime (fp32)"]["metrics"]["accuracy"] - rows["2. finetune"]["metrics"]["accuracy"]) < 0.3
    assert result.report.row("pruned").size_bytes < result.report.row("baseline").size_bytes


def test_recipe_error_names_file_stage_and_key(tmp_path):
    bad = SMALL.replace("sparsity: 0.5", "sparsty: 0.5")
    path = _write(tmp_path, bad, "bad.yaml")
    with pytest.raises(ConfigError, match=r"bad\.yaml: stage 1 \(type 'magnitude_pruning'\).*unknown field 'sparsty'"):
        load_recipe(path)


def test_recipe_unknown_top_level_key(tmp_path):
    path = _write(tmp_path, SMALL + "extra: 1\n")
    with pytest.raises(ConfigError, match="unknown field 'extra'"):
        load_recipe(path)


def test_demo_recipe_is_valid():
    from shrink.cli import _demo_recipe

    recipe = load_recipe(_demo_recipe())
    assert recipe.model.zoo == "digits_cnn"
    assert [s.config.type_name for s in recipe.configs()][:2] == ["magnitude_pruning", "finetune"]


BRANCHES = """
model: {zoo: digits_cnn}
data: {zoo: digits}
stages:
  - {type: magnitude_pruning, sparsity: 0.5, name: sparse}
  - {type: int8_static, name: sparse int8}
  - {type: magnitude_pruning, sparsity: 0.9, from: baseline, name: very sparse}
  - {type: int8_static, name: very sparse int8}
evaluate: {batch_sizes: [1], reps: 2, warmup: 1}
"""


def test_from_starts_a_branch_and_quantize_twice_is_per_chain(tmp_path):
    stages = load_recipe(_write(tmp_path, BRANCHES)).configs()
    assert [(s.label, s.source) for s in stages] == [
        ("sparse", "baseline"),
        ("sparse int8", "sparse"),
        ("very sparse", "baseline"),
        ("very sparse int8", "very sparse"),
    ]
    twice = BRANCHES.replace("from: baseline, name: very sparse", "name: very sparse")
    with pytest.raises(ConfigError, match="stage 4 .*contradicts stage 2"):
        load_recipe(_write(tmp_path, twice, "twice.yaml"))
    unknown = BRANCHES.replace("from: baseline", "from: nowhere")
    with pytest.raises(ConfigError, match="'from: nowhere' names no earlier stage .*field 'from'"):
        load_recipe(_write(tmp_path, unknown, "unknown.yaml"))


def test_branches_run_from_their_source(tmp_path):
    text = BRANCHES.replace("  - {type: int8_static, name: sparse int8}\n", "").replace(
        "  - {type: int8_static, name: very sparse int8}\n", ""
    )
    result = run(_write(tmp_path, text), tmp_path / "out", progress=False)
    rows = {r.name: r for r in result.report.rows}
    total = rows["baseline"].params
    assert abs(rows["sparse"].nonzero_params / total - 0.5) < 0.02
    assert abs(rows["very sparse"].nonzero_params / total - 0.1) < 0.02


def test_every_bundled_recipe_is_valid():
    from importlib import resources

    folder = resources.files("shrink").joinpath("recipes")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml"))
    assert len(names) >= 7
    for name in names:
        recipe = load_recipe(str(folder.joinpath(name)))
        assert recipe.configs(), name
