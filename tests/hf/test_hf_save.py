"""save_pretrained on a transformers model shrink changed raises; unchanged layouts and the original stay savable."""

import pytest
import torch
from transformers import BertConfig, BertModel

import shrink
from shrink.errors import ModelError
from shrink.quant import FloatCast, WeightOnly


@pytest.fixture()
def bert() -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    return BertModel(config).eval()


def test_quantized_transformers_model_refuses_save_pretrained(bert, tmp_path):
    q = shrink.quantize(bert, WeightOnly(bits=4, group_size=32))
    with pytest.raises(ModelError, match=r"save_pretrained: this BertModel was compressed by shrink .*shrink\.save"):
        q.save_pretrained(tmp_path / "q")
    assert not (tmp_path / "q").exists()
    bert.save_pretrained(tmp_path / "original")  # the user's model is untouched
    again = BertModel.from_pretrained(tmp_path / "original")
    assert torch.equal(again.pooler.dense.weight, bert.pooler.dense.weight)


def test_same_layout_still_saves_the_hugging_face_way(bert, tmp_path):
    half = shrink.quantize(bert, FloatCast(dtype="bfloat16"))
    half.save_pretrained(tmp_path / "bf16")
    back = BertModel.from_pretrained(tmp_path / "bf16", dtype=torch.bfloat16)
    assert torch.equal(back.encoder.layer[0].output.dense.weight, half.encoder.layer[0].output.dense.weight)


def test_guard_lifts_when_the_layout_is_back_and_survives_copies(bert, tmp_path):
    import copy

    from shrink.pruning import MagnitudePruning, make_permanent

    sparse = shrink.prune(bert, MagnitudePruning(sparsity=0.5))
    with pytest.raises(ModelError, match="is gone"):
        copy.deepcopy(sparse).save_pretrained(tmp_path / "masked")  # masks: weights renamed
    make_permanent(sparse)
    sparse.save_pretrained(tmp_path / "plain")  # plain weights again: the Hugging Face way works
    back = BertModel.from_pretrained(tmp_path / "plain")
    assert torch.equal(
        back.encoder.layer[0].intermediate.dense.weight, sparse.encoder.layer[0].intermediate.dense.weight
    )


def test_wrapped_transformers_model_is_guarded_too(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    q = shrink.quantize(BertForSequenceClassification(config).eval(), WeightOnly(bits=4, group_size=32))
    for model in (q, q.bert):
        with pytest.raises(ModelError, match="random weights"):
            model.save_pretrained(tmp_path / "q")
