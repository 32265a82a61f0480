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


# --- recipes on a user's own package (no PYTHONPATH, checkpoint next to the recipe, data needs checked first) ---

USER_MODELS = """
import torch
from torch import nn


def build(bias_class=None):
    model = nn.Linear(4, 3)
    if bias_class is not None:  # an untrained model that always answers one class
        with torch.no_grad():
            model.weight.zero_()
            model.bias.zero_()
            model.bias[bias_class] = 1.0
    return model
"""

USER_DATA = """
import torch

from shrink.data import DataBundle

W = torch.tensor([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])


class Untouchable:
    def __iter__(self):
        raise RuntimeError("training data was read: a stage ran before the recipe's checks")


def bundle(train=False, calibration=False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 4, generator=g)
    y = (x @ W.T).argmax(-1)
    return DataBundle(
        test=[(x[:15], y[:15]), (x[15:], y[15:])],
        example_inputs=x[:1],
        train=Untouchable() if train else None,
        calibration=[x[:8]] if calibration else None,
    )
"""


def _user_project(root, package):
    """A folder holding the user's package ``package`` (models, data) and a checkpoint of trained weights."""
    import torch

    pkg = root / package
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(USER_MODELS)
    (pkg / "data.py").write_text(USER_DATA)
    torch.save({"weight": torch.eye(3, 4) * 3.0, "bias": torch.zeros(3)}, root / "trained.pt")
    return root


def _user_recipe(folder, package, model_extra="checkpoint: trained.pt", data_kwargs="{}", stages="[]"):
    text = (
        f"model: {{factory: '{package}.models:build', {model_extra}}}\n"
        f"data: {{factory: '{package}.data:bundle', kwargs: {data_kwargs}}}\n"
        f"stages: {stages}\n"
        "evaluate: {batch_sizes: [1], reps: 1, warmup: 0}\n"
    )
    return _write(folder, text, "recipe.yaml")


@pytest.fixture
def forget_modules():
    import sys

    path = list(sys.path)
    yield
    for name in [m for m in sys.modules if m.startswith("userpkg_")]:
        del sys.modules[name]
    assert sys.path == path  # the recipe's folder and cwd were on sys.path only while importing


def test_user_package_imports_from_the_recipe_folder_checkpoint_relative_to_it(tmp_path, monkeypatch, forget_modules):
    import torch

    project = _user_project(tmp_path / "project", "userpkg_a")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = run(_user_recipe(project, "userpkg_a"), tmp_path / "out", progress=False)
    assert torch.equal(result.model.weight, torch.eye(3, 4) * 3.0)  # the checkpoint beside the recipe was loaded
    baseline = result.report.row("baseline")
    assert baseline.metrics["accuracy"] == 100.0
    assert not any("chance" in n for n in baseline.notes)


def test_user_package_imports_from_the_current_directory(tmp_path, monkeypatch, forget_modules):
    project = _user_project(tmp_path / "project", "userpkg_b")
    (tmp_path / "recipes").mkdir()
    monkeypatch.chdir(project)
    recipe = load_recipe(_user_recipe(tmp_path / "recipes", "userpkg_b", model_extra="kwargs: {}"))
    assert recipe.model.factory == "userpkg_b.models:build"
    with pytest.raises(ConfigError, match=r"checkpoint': file 'trained.pt' not found \(a relative path is read from"):
        load_recipe(_user_recipe(tmp_path / "recipes", "userpkg_b"))  # the checkpoint is not beside this recipe


def test_missing_calibration_is_found_before_any_stage_runs(tmp_path, forget_modules):
    project = _user_project(tmp_path, "userpkg_c")
    stages = "[{type: finetune, epochs: 1}, {type: int8_static}]"
    path = _user_recipe(project, "userpkg_c", data_kwargs="{train: true}", stages=stages)
    with pytest.raises(ConfigError, match=r"recipe.yaml: stage 2 \(int8_static, line 3\) needs calibration data"):
        run(path, tmp_path / "out", progress=False)  # finetune would read the Untouchable training data first
    assert not (tmp_path / "out" / "model.shrink").exists()
    path = _user_recipe(project, "userpkg_c", stages="[{type: finetune, epochs: 1}]")
    with pytest.raises(ConfigError, match=r"stage 1 \(finetune, line 3\) needs train data.*train=None"):
        run(path, tmp_path / "out", progress=False)


def test_stage_needs_rules():
    from shrink.presets import get as get_preset
    from shrink.pruning import MagnitudePruning
    from shrink.pruning.structured.config import ChannelPruning
    from shrink.quant import Int8Static, SmoothQuant
    from shrink.recipe_checks import stage_needs

    assert stage_needs(Int8Static()) == [("calibration",)]
    for preparation in get_preset("encoder-int4"):  # awq, signround (weight_only rounds to nearest without data)
        assert stage_needs(preparation) == ([] if preparation.type_name == "weight_only" else [("calibration",)])
    assert stage_needs(SmoothQuant()) == [("calibration",)]
    assert stage_needs(MagnitudePruning(sparsity=0.5)) == []
    assert stage_needs(ChannelPruning(ratio=0.3)) == [("example_inputs",)]
    assert stage_needs(ChannelPruning(ratio=0.3, importance="taylor")) == [
        ("example_inputs",),
        ("train", "calibration"),
    ]


def test_baseline_at_chance_level_gets_a_warning(tmp_path, forget_modules):
    project = _user_project(tmp_path, "userpkg_d")
    path = _user_recipe(project, "userpkg_d", model_extra="kwargs: {bias_class: 0}")
    result = run(path, tmp_path / "out", progress=False)
    baseline = result.report.row("baseline")
    assert baseline.metrics["accuracy"] <= 50.0  # one class of three: chance is 33%
    (note,) = [n for n in baseline.notes if "chance level" in n]
    assert "for 3 classes (<= 50.0%)" in note and "checkpoint" in note
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert note in saved["rows"][0]["notes"]


def test_data_bundle_needs_only_test_and_example_inputs():
    import torch

    from shrink.data import DataBundle

    x = torch.zeros(2, 4)
    bundle = DataBundle(test=[x], example_inputs=x[:1])
    assert bundle.train is None and bundle.val is None and bundle.calibration is None
    assert bundle.metric == "accuracy"


def test_duplicate_key_check_resolves_keys_and_follows_each_alias_once(tmp_path):
    import yaml

    from shrink.recipe import _check_duplicate_keys

    for text in ('kwargs: {1: x, "1": y}', "a: &x {k: 1}\nb: *x\nc: *x", "a: &x [*x]"):  # distinct keys, aliases
        _check_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader), tmp_path / "r.yaml")
    with pytest.raises(ConfigError, match="line 3: key 'k' given twice in one mapping \\(first at line 2\\)"):
        _check_duplicate_keys(yaml.compose("a:\n  {k: 1,\n   k: 2}", Loader=yaml.SafeLoader), tmp_path / "r.yaml")
