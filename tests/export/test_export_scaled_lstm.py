"""An LSTM that ``Int8Dynamic`` rounded is stored at 8 bits: int8 codes and one fp32 scale per row, which give the
weights back bit for bit (outputs identical, the ONNX export still int8); damaged entries are refused."""

import json

import onnx
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save
from torch import nn

import shrink
from shrink.errors import FileFormatError
from shrink.quant import Int8Dynamic


class Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.fc = nn.LSTM(8, 32, num_layers=2, bidirectional=True, batch_first=True), nn.Linear(64, 4)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


def _parts(path):
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["shrink_manifest"]), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def test_int8_lstm_weights_are_stored_as_codes_and_row_scales(tmp_path):
    torch.manual_seed(0)
    model = Tagger().eval()
    q = shrink.quantize(model, Int8Dynamic())
    fp32 = shrink.save(model, tmp_path / "fp32.shrink")
    path = shrink.save(q, tmp_path / "q.shrink")
    manifest, tensors = _parts(path)
    assert manifest["layout"]["rnn.weight_hh_l1_reverse"] == {"scaled": {"bits": 8, "shape": [128, 32]}}
    assert tensors["rnn.weight_hh_l1_reverse@codes"].dtype == torch.int8
    assert path.stat().st_size * 2.9 < fp32.stat().st_size  # the weights: 4 bytes -> 1 (+ 4 per row of 8 to 64)
    loaded = shrink.load(path, Tagger)
    x = torch.randn(3, 7, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), q(x))
    graph = onnx.load(str(shrink.export.onnx(loaded, tmp_path / "q.onnx", x)))
    assert "DynamicQuantizeLSTM" in {n.op_type for n in graph.graph.node}


def test_an_unrounded_lstm_stays_fp32(tmp_path):
    manifest, _ = _parts(shrink.save(Tagger(), tmp_path / "m.shrink"))
    assert not any("scaled" in info for info in manifest["layout"].values())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda man, ten, k: man["layout"][k]["scaled"].update(bits=4), "expected"),
        (lambda man, ten, k: man["layout"][k]["scaled"].update(shape=[2**40, 2]), "is not \\[rows, cols\\]"),
        (lambda man, ten, k: ten.update({f"{k}@codes": ten[f"{k}@codes"].float()}), "codes must be int8"),
        (lambda man, ten, k: ten.pop(f"{k}@scale"), "missing"),
        (lambda man, ten, k: ten[f"{k}@scale"].fill_(float("nan")), "finite"),
    ],
)
def test_damaged_entries_are_refused(tmp_path, change, message):
    q = shrink.quantize(Tagger().eval(), Int8Dynamic())
    manifest, tensors = _parts(shrink.save(q, tmp_path / "q.shrink"))
    change(manifest, tensors, "rnn.weight_ih_l0")
    bad = tmp_path / "bad.shrink"
    bad.write_bytes(st_save(tensors, metadata={"shrink_manifest": json.dumps(manifest)}))
    with pytest.raises(FileFormatError, match=message):
        shrink.load(bad, Tagger)
