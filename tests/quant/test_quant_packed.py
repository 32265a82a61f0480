"""Packed int4 / int8 weights: packing round trip, weight-only layers, real file sizes, fp16 casting, dynamic."""

import torch
from torch import nn

import shrink
from shrink.export.artifact import artifact_bytes
from shrink.quant import FloatCast, Int8Dynamic, PackedEmbedding, PackedLinear, WeightOnly, pack_int4, unpack_int4


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(200, 128)
        self.fc1 = nn.Linear(128, 256)
        self.fc2 = nn.Linear(256, 64)

    def forward(self, ids):
        return self.fc2(torch.relu(self.fc1(self.emb(ids).mean(1))))


def test_pack_int4_round_trip():
    q = torch.randint(-8, 8, (5, 64), dtype=torch.int8)
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 32)
    assert torch.equal(unpack_int4(packed), q)
    assert int(packed[0, 0]) == (int(q[0, 0]) + 8) | ((int(q[0, 1]) + 8) << 4)  # low nibble first


def test_weight_only_sizes_and_error(tmp_path):
    torch.manual_seed(0)
    net = _Net().eval()
    ids = torch.randint(0, 200, (4, 7))
    fp32 = artifact_bytes(net)
    q8 = shrink.quantize(net, WeightOnly(bits=8, group_size=32))
    q4 = shrink.quantize(net, WeightOnly(bits=4, group_size=32))
    assert isinstance(q4.fc1, PackedLinear) and isinstance(q4.emb, PackedEmbedding)
    assert artifact_bytes(q8) < 0.30 * fp32
    assert artifact_bytes(q4) < 0.17 * fp32
    ref = net(ids)
    for q, tol in ((q8, 0.01), (q4, 0.15)):
        rel = (q(ids) - ref).norm() / ref.norm()
        assert rel < tol
    # each group's grid (amax / 7, or a signed extreme on code -8, whichever rounds it better) is no worse than amax / 7
    w, p = net.fc1.weight, q4.fc1.packed
    wg = w.detach().reshape(256, 4, 32)
    minmax = wg.abs().amax(-1, keepdim=True) / 7
    err_minmax = ((torch.clamp(torch.round(wg / minmax), -8, 7) * minmax - wg) ** 2).sum()
    assert ((p.dequantize() - w) ** 2).sum() <= err_minmax * 1.01
    # save / load keeps the packed layers
    path = shrink.save(q4, tmp_path / "q4.shrink")
    back = shrink.load(path, _Net)
    assert torch.allclose(back(ids), q4(ids))


def test_group_sizes_change_size():
    net = _Net().eval()
    sizes = [artifact_bytes(shrink.quantize(net, WeightOnly(bits=4, group_size=g))) for g in (32, 64, 128)]
    assert sizes[0] > sizes[1] > sizes[2]


def test_float_cast_and_dynamic():
    torch.manual_seed(0)
    net = _Net().eval()
    ids = torch.randint(0, 200, (4, 7))
    half = shrink.quantize(net, FloatCast(dtype="bfloat16"))
    assert half.fc1.weight.dtype == torch.bfloat16 and half(ids).dtype == torch.float32
    assert artifact_bytes(half) < 0.55 * artifact_bytes(net)
    dyn = shrink.quantize(net, Int8Dynamic(backend="torch"))
    assert "real" in dyn.shrink_execution
    assert (dyn(ids) - net(ids)).norm() / net(ids).norm() < 0.03
    sim = shrink.quantize(net, Int8Dynamic())
    assert (sim(ids) - net(ids)).norm() / net(ids).norm() < 0.03


def test_dynamic_lstm_torch_backend():
    lstm = nn.Sequential(nn.LSTM(16, 32, batch_first=True))
    q = shrink.quantize(lstm, Int8Dynamic(backend="torch", selector={"types": ["LSTM"]}))
    x = torch.randn(2, 5, 16)
    out, ref = q(x)[0], lstm(x)[0]
    assert type(q[0]).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert (out - ref).abs().max() < 0.05
