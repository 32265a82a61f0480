"""``FloatCast`` hands back fp32 outputs in the containers the model returned: a transformers ``ModelOutput`` stays
one (``.logits`` works), a namedtuple stays that namedtuple, a dict a dict; a model rebuilt by ``shrink.load`` takes
and returns fp32 too."""

import collections

import pytest
import torch
from torch import nn

import shrink
from shrink.quant import FloatCast

Out = collections.namedtuple("Out", "logits feat")


class _Named(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.fc, self.kind = nn.Linear(4, 3), kind

    def forward(self, x):
        y = self.fc(x)
        return Out(y, x) if self.kind == "namedtuple" else {"logits": y, "ids": x.argmax(-1)}


@pytest.mark.parametrize("kind", ["namedtuple", "dict"])
def test_containers_keep_their_type_and_come_back_fp32(kind):
    torch.manual_seed(0)
    model, x = _Named(kind).eval(), torch.randn(2, 4)
    out = shrink.quantize(model, FloatCast(dtype="float16"))(x)
    assert type(out) is type(model(x))
    assert out[0 if kind == "namedtuple" else "logits"].dtype == torch.float32
    if kind == "dict":
        assert out["ids"].dtype == torch.int64  # integer outputs are left alone


def test_a_transformers_model_output_stays_one():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    bert = transformers.BertForSequenceClassification(config).eval()
    ids = {"input_ids": torch.randint(0, 100, (2, 8))}
    out = shrink.quantize(bert, FloatCast(dtype="bfloat16"))(**ids)
    assert type(out) is type(bert(**ids)) and out.logits.shape == (2, 2) and out.logits.dtype == torch.float32


class _Forecaster(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm, self.head = nn.LSTM(2, 8, batch_first=True), nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.lstm(x)[0][:, -1])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_saved_and_loaded_model_still_takes_fp32(tmp_path, dtype):
    torch.manual_seed(0)
    q, x = shrink.quantize(_Forecaster().eval(), FloatCast(dtype=dtype)), torch.randn(3, 5, 2)
    loaded = shrink.load(shrink.save(q, tmp_path / "m.shrink"), _Forecaster)
    assert next(loaded.parameters()).dtype == getattr(torch, dtype)
    with torch.no_grad():
        assert torch.equal(loaded(x), q(x)) and loaded(x).dtype == torch.float32
