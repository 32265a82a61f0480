import pytest
import torch

import shrink
from shrink.errors import FileFormatError
from shrink.export.artifact import _rebuild
from shrink.pruning import ChannelPruning


def _gpt2():
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    return GPT2Model(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=32)).eval()


def test_pruned_gpt2_reloads_from_the_original_factory(tmp_path):
    x = {
        "input_ids": torch.randint(0, 100, (2, 7)),
        "attention_mask": torch.ones(2, 7, dtype=torch.long),
        "position_ids": torch.arange(7).repeat(2, 1),
    }
    original = _gpt2()
    pruned = shrink.prune(original, ChannelPruning(ratio=0.5), example_inputs=x)
    assert sum(p.numel() for p in pruned.parameters()) < 0.7 * sum(p.numel() for p in original.parameters())
    loaded = shrink.load(shrink.save(pruned, tmp_path / "gpt2.shrink"), _gpt2)
    with torch.no_grad():
        diff = (pruned(**x).last_hidden_state - loaded(**x).last_hidden_state).abs().max()
    assert float(diff) == 0.0


def test_library_layer_arguments_are_checked():
    with pytest.raises(FileFormatError, match="bad arguments for Conv1D"):
        _rebuild("transformers.pytorch_utils:Conv1D", {"nf": 4, "nx": "x"}, "file")
