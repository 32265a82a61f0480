"""Bad recipes fail before any work with an error naming the file, the stage and the field."""

from __future__ import annotations

import pytest

from shrink.errors import ConfigError, FileFormatError, ModelError, SelectorError
from shrink.recipe import load_recipe, run

HEAD = "model: {zoo: digits_cnn}\ndata: {zoo: digits}\n"
EVAL = "evaluate: {batch_sizes: [1], reps: 1, warmup: 0}\n"

# (what is tried, recipe text, error fragments besides the file name)
BAD_RECIPES = [
    ("malformed YAML (unclosed brace)", "model: {zoo: digits_cnn\ndata: {zoo: digits}\n", ["malformed YAML", "line 2"]),
    ("empty file", "", ["a recipe is a mapping"]),
    ("missing model", "data: {zoo: digits}\nstages: []\n", ["missing 'model'"]),
    ("missing data", "model: {zoo: digits_cnn}\nstages: []\n", ["missing 'data'"]),
    ("unknown top-level key", HEAD + "stagez: []\n", ["unknown field 'stagez'"]),
    (
        "a stage field given twice",
        HEAD + "stages:\n  - {type: magnitude_pruning, sparsity: 0.5, sparsity: 0.9}\n",
        ["line 4", "key 'sparsity' given twice", "first at line 4"],
    ),
    ("a second top-level model", HEAD + "model: {zoo: digits_mlp}\n", ["line 3", "key 'model' given twice"]),
    ("no batch size to time", HEAD + "evaluate: {batch_sizes: []}\n", ["field 'evaluate.batch_sizes'", "at least 1"]),
    (
        "misspelt data kwargs",
        "model: {zoo: digits_cnn}\ndata: {zoo: digits, kwargs: {batch_sise: 8}}\n",
        ["data: field 'kwargs'", "digits_data()", "'batch_sise'", "it takes: batch_size"],
    ),
    (
        "model given both zoo and factory",
        "model: {zoo: digits_cnn, factory: 'x:y'}\ndata: {zoo: digits}\n",
        ["model", "exactly one of 'zoo' or 'factory'"],
    ),
    (
        "unknown zoo model",
        "model: {zoo: digits_cnnn}\ndata: {zoo: digits}\n",
        ["model", "field 'zoo'", "'digits_cnnn'"],
    ),
    (
        "factory that cannot be imported",
        "model: {factory: 'no_such_pkg.mod:build'}\ndata: {zoo: digits}\n",
        ["model", "field 'factory'", "no_such_pkg"],
    ),
    (
        "checkpoint path that does not exist",
        "model: {zoo: digits_cnn, checkpoint: missing.pt}\ndata: {zoo: digits}\n",
        ["field 'checkpoint'", "missing.pt"],
    ),
    ("stages is not a list", HEAD + "stages: 3\n", ["field 'stages'"]),
    ("stage is a bare string", HEAD + "stages:\n  - magnitude_pruning\n", ["field 'stages.0'"]),
    ("stage without type", HEAD + "stages:\n  - {sparsity: 0.5}\n", ["stage 1", "missing 'type'", "line 4"]),
    (
        "unknown stage type",
        HEAD + "stages:\n  - {type: magnitude_prunning, sparsity: 0.5}\n",
        ["stage 1", "unknown stage type 'magnitude_prunning'", "did you mean 'magnitude_pruning'?", "line 4"],
    ),
    (
        "unknown field (typo)",
        HEAD + "stages:\n  - {type: finetune, epochs: 1}\n  - {type: magnitude_pruning, sparsty: 0.5}\n",
        ["stage 2", "magnitude_pruning", "unknown field 'sparsty'", "line 5"],
    ),
    ("mistyped field", HEAD + "stages:\n  - {type: finetune, epochs: many}\n", ["stage 1", "field 'epochs'", "many"]),
    (
        "field out of range",
        HEAD + "stages:\n  - {type: magnitude_pruning, sparsity: 1.5}\n",
        ["stage 1", "field 'sparsity'", "less than 1"],
    ),
    (
        "mistyped nested selector field",
        HEAD + "stages:\n  - {type: magnitude_pruning, sparsity: 0.5, selector: {includ: [x]}}\n",
        ["stage 1", "unknown field 'selector.includ'"],
    ),
    (
        "stage name that is not a string",
        HEAD + "stages:\n  - {type: finetune, name: [a]}\n",
        ["stage 1", "field 'name'"],
    ),
    ("wrong evaluate option", HEAD + "evaluate: {threads: 0}\n", ["field 'evaluate.threads'"]),
    (
        "stage type given as a list",
        HEAD + "stages:\n  - {type: [magnitude_pruning], sparsity: 0.5}\n",
        ["stage 1", "field 'type'", "['magnitude_pruning']", "line 4"],
    ),
    ("negative seed", HEAD + "seed: -1\n", ["field 'seed'", "-1"]),
    ("seed of 2**70", HEAD + f"seed: {2**70}\n", ["field 'seed'", str(2**70)]),
    (
        "latency batch size of 10**12",
        HEAD + "evaluate: {batch_sizes: [1000000000000]}\n",
        ["field 'evaluate.batch_sizes.0'", "1000000000000"],
    ),
]


@pytest.mark.parametrize("tried,text,fragments", BAD_RECIPES, ids=[b[0] for b in BAD_RECIPES])
def test_bad_recipe_names_file_stage_and_field(tmp_path, user_sees, shrink_modules, tried, text, fragments):
    # shrink_modules: every config registered, so the lists of known types in the messages do not depend on order
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    user_sees("recipe", tried, lambda: load_recipe(path), ConfigError, "bad.yaml", *fragments)


def test_missing_and_binary_recipe_files(tmp_path, user_sees):
    user_sees(
        "recipe",
        "recipe file that does not exist",
        lambda: load_recipe(tmp_path / "nope.yaml"),
        ConfigError,
        "nope.yaml",
        "not found",
    )
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    user_sees("recipe", "binary file given as recipe", lambda: load_recipe(binary), ConfigError, "binary.yaml")


def test_contradictory_stages(tmp_path, user_sees, shrink_modules):
    from shrink.stages import registered_types

    once = {"quantize", "deep_compress"}
    types = registered_types()
    cands = [
        name
        for name, cls in types.items()
        if cls.family in once and not cls.prepares and not any(f.is_required() for f in cls.model_fields.values())
    ]
    if not cands:
        pytest.skip("no quantize/deep_compress config without required fields is registered yet")
    name = cands[0]
    path = tmp_path / "twice.yaml"
    path.write_text(HEAD + f"stages:\n  - {{type: {name}}}\n  - {{type: finetune, epochs: 1}}\n  - {{type: {name}}}\n")
    user_sees(
        "recipe",
        f"{types[name].family} twice ({name} then {name})",
        lambda: load_recipe(path),
        ConfigError,
        "twice.yaml",
        "stage 3",
        "contradicts stage 1",
        "line 6",
    )


def test_preparation_stage_after_its_scheme(tmp_path, user_sees, shrink_modules):
    path = tmp_path / "late.yaml"
    path.write_text(HEAD + "stages:\n  - {type: int8_dynamic}\n  - {type: gptq}\n")
    user_sees(
        "recipe",
        "preparation stage after the quantization (int8_dynamic then gptq)",
        lambda: load_recipe(path),
        ConfigError,
        "late.yaml",
        "stage 2 (gptq, line 5) comes after stage 1 (line 4)",
        "list it before that stage",
    )


def test_preparation_stages_then_one_scheme_load(tmp_path, shrink_modules):
    path = tmp_path / "prepared.yaml"
    path.write_text(
        HEAD + "stages:\n  - {type: smooth_quant}\n  - {type: gptq}\n  - {type: int8_dynamic}\n"
        "  - {type: awq, from: baseline}\n  - {type: weight_only, bits: 8, group_size: null}\n"
    )
    stages = load_recipe(path).configs()
    assert [s.config.type_name for s in stages] == ["smooth_quant", "gptq", "int8_dynamic", "awq", "weight_only"]


def test_quantization_stages_of_different_layers_load(tmp_path, shrink_modules):
    path = tmp_path / "split.yaml"
    path.write_text(
        HEAD + "stages:\n  - {type: weight_only, bits: 8, selector: {types: [Embedding]}}\n"
        "  - {type: gptq}\n  - {type: int8_dynamic, selector: {types: [Linear]}}\n"
    )
    assert [s.config.type_name for s in load_recipe(path).configs()] == ["weight_only", "gptq", "int8_dynamic"]
    path.write_text(HEAD + "stages:\n  - {type: int8_dynamic}\n  - {type: weight_only, bits: 8}\n")
    with pytest.raises(ConfigError, match="stage 2 \\(weight_only, line 5\\) contradicts stage 1"):
        load_recipe(path)


def test_selector_matching_nothing_names_file_stage_and_field(tmp_path, user_sees):
    path = tmp_path / "sel.yaml"
    path.write_text(
        HEAD
        + "stages:\n  - {type: magnitude_pruning, sparsity: 0.5, selector: {include: ['re:decoder\\..*']}}\n"
        + EVAL
    )
    user_sees(
        "recipe",
        "selector matching no layer",
        lambda: run(path, tmp_path / "out", progress=False),
        SelectorError,
        "sel.yaml",
        "stage 1 (magnitude_pruning, line 4)",
        "selector",
        "matched no layer",
    )
    assert not (tmp_path / "out" / "model.shrink").exists()
    path.write_text(
        HEAD + "stages:\n  - {type: magnitude_pruning, sparsity: 0.5, selector: {include: [features.99]}}\n"
    )
    user_sees(
        "recipe",
        "selector naming a layer that does not exist",
        lambda: run(path, tmp_path / "o2", progress=False),
        SelectorError,
        "sel.yaml",
        "stage 1",
        "selector",
        "no module named 'features.99'",
    )


def _recipe_with_checkpoint(path, checkpoint):
    """A digits recipe at ``path`` whose model loads ``checkpoint``."""
    path.write_text(f"model: {{zoo: digits_cnn, checkpoint: '{checkpoint}'}}\ndata: {{zoo: digits}}\n")
    return path


def _save_state(tmp_path, state, name):
    import torch

    path = tmp_path / name
    torch.save(state, path)
    return path


class Evil:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_bad_checkpoints(tmp_path, user_sees, digits_teacher):
    import torch

    marker = tmp_path / "pwned"
    cases = [
        (
            "checkpoint of another architecture",
            {"fc.weight": torch.zeros(3, 3)},
            ModelError,
            ["does not match the model"],
        ),
        (
            "checkpoint holding a pickled object (code execution attempt)",
            {"x": Evil(marker)},
            FileFormatError,
            ["not a readable state dict"],
        ),
        ("checkpoint that is a list, not a state dict", [torch.zeros(1)], FileFormatError, ["not a state dict"]),
    ]
    for i, (tried, state, error, fragments) in enumerate(cases):
        ckpt = _save_state(tmp_path, state, f"ckpt{i}.pt")
        path = _recipe_with_checkpoint(tmp_path / f"c{i}.yaml", ckpt)
        user_sees(
            "model and data",
            tried,
            lambda p=path: run(p, tmp_path / "out", progress=False),
            error,
            f"c{i}.yaml",
            "model",
            f"ckpt{i}.pt",
            *fragments,
        )
    assert not marker.exists(), "a pickled object in a checkpoint was executed"
    trunc = tmp_path / "trunc.pt"
    torch.save(digits_teacher.state_dict(), trunc)
    trunc.write_bytes(trunc.read_bytes()[:1000])
    path = _recipe_with_checkpoint(tmp_path / "t.yaml", trunc)
    user_sees(
        "model and data",
        "truncated checkpoint",
        lambda: run(path, tmp_path / "out", progress=False),
        FileFormatError,
        "t.yaml",
        "trunc.pt",
        "not a readable state dict",
    )


def test_checkpoints_are_read_by_their_content_not_their_suffix(tmp_path, user_sees, shrink_modules):
    import torch
    from safetensors.torch import save_file

    import shrink
    from shrink.zoo import DigitsCNN

    torch.manual_seed(0)
    model = DigitsCNN()
    save_file(model.state_dict(), tmp_path / "weights.st")  # safetensors without its suffix: loads
    result = run(
        _recipe_with_checkpoint(tmp_path / "ok.yaml", tmp_path / "weights.st"), tmp_path / "out", progress=False
    )
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in result.model.state_dict().items())
    shrink.save(model, tmp_path / "model.shrink")  # a whole shrink model is not a state dict for the factory
    bad = _recipe_with_checkpoint(tmp_path / "s.yaml", tmp_path / "model.shrink")
    user_sees(
        "model and data",
        "a shrink model file given as a checkpoint",
        lambda: run(bad, tmp_path / "out2", progress=False),
        FileFormatError,
        "s.yaml",
        "model.shrink",
        "whole shrink model file",
        "shrink.load",
    )
