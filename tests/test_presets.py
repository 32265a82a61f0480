"""Presets: the benchmark-winning stage lists ship by name, work on other models of their family than the one they were
measured on, expand in recipes and list on the command line."""

import pytest
import torch
import yaml
from torch import nn

import shrink
from shrink.cli import main
from shrink.errors import ConfigError
from shrink.presets import PRESETS, get
from shrink.quant import GPTQ, PackedEmbedding, PackedLinear
from shrink.recipe import load_recipe


def _bert(hidden: int, intermediate: int) -> tuple[nn.Module, list[dict[str, torch.Tensor]]]:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4, intermediate_size=intermediate
    )
    model = BertModel(config).eval()
    batches = []
    for _ in range(4):
        ids = torch.randint(0, 64, (4, 12))
        mask = torch.ones_like(ids)
        mask[0, 8:] = 0  # some padding
        batches.append({"input_ids": ids, "attention_mask": mask})
    return model, batches


def _cosine(a: nn.Module, b: nn.Module, batch: dict[str, torch.Tensor]) -> float:
    with torch.no_grad():
        x, y = a(**batch).last_hidden_state, b(**batch).last_hidden_state
    return float(nn.functional.cosine_similarity(x.flatten(1), y.flatten(1)).min())


def test_unknown_preset_suggests_the_close_name():
    with pytest.raises(ConfigError, match="unknown preset 'encoder-int9' \\(did you mean 'encoder-int8'"):
        get("encoder-int9")


def test_get_returns_a_fresh_list_each_time():
    first = get("encoder-int8")
    first.append(GPTQ())
    assert len(get("encoder-int8")) == len(first) - 1
    assert shrink.presets.PRESETS is PRESETS  # reachable as shrink.presets after a plain `import shrink`


def test_encoder_int8_on_another_bert_than_minilm():
    model, batches = _bert(64, 128)
    q = shrink.quantize(model, get("encoder-int8"), calibration=batches[:3])
    assert type(q.encoder.layer[0].attention.self.query).__name__ != "Linear"  # int8 layers in place
    assert isinstance(q.embeddings.word_embeddings, PackedEmbedding)
    assert isinstance(q.pooler.dense, nn.Linear)  # the pooler stays float
    assert _cosine(model, q, batches[3]) > 0.99


def test_encoder_int4_packs_the_encoder_linears():
    model, batches = _bert(128, 256)
    q = shrink.quantize(model, get("encoder-int4"), calibration=batches[:3])
    layer = q.encoder.layer[1].output.dense
    assert isinstance(layer, PackedLinear) and layer.packed.bits == 4 and layer.packed.group_size == 128
    assert layer.packed.asymmetric  # a zero point per group
    assert layer.input_scale is not None  # AWQ's scaling kept
    assert _cosine(model, q, batches[3]) > 0.95


def test_recipe_expands_a_preset_item(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_text(
        "model: {zoo: minilm}\ndata: {zoo: minilm}\nstages:\n  - {preset: encoder-int8}\n"
        "  - {preset: encoder-int4, from: baseline}\n"
    )
    recipe = load_recipe(path)
    types = [st.config.type_name for st in recipe.configs()]
    assert types == [c.type_name for c in get("encoder-int8") + get("encoder-int4")]
    assert recipe.configs()[4].source == "baseline"
    assert "line 5" in recipe.stage_label(4)


def test_recipe_preset_item_errors_name_the_stage(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {zoo: minilm}\ndata: {zoo: minilm}\nstages:\n  - {preset: encoder-int8, bits: 4}\n")
    with pytest.raises(ConfigError, match="stage 1: a preset item takes only 'preset' and 'from', got \\['bits'\\]"):
        load_recipe(path)
    path.write_text("model: {zoo: minilm}\ndata: {zoo: minilm}\nstages:\n  - {preset: decoder-w8a9}\n")
    with pytest.raises(ConfigError, match="unknown preset 'decoder-w8a9'"):
        load_recipe(path)


def test_cli_lists_presets_and_one_preset_s_stages(capsys):
    assert main(["presets"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in PRESETS)
    assert main(["presets", "encoder-int4"]) == 0
    stages = capsys.readouterr().out
    listed = [line.removeprefix("  - ") for line in stages.splitlines() if line.startswith("  - ")]
    assert [yaml.safe_load(line)["type"] for line in listed] == ["awq", "signround", "weight_only"]  # recipe YAML items
