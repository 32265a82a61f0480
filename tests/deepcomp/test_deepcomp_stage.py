"""The deep_compression stage end to end on a small model: sparsity, shared values, file = returned weights."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import shrink
from shrink.deepcomp import DeepCompression, load_compressed
from shrink.errors import ConfigError, DataError


def _factory():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=g)
    return DataLoader(TensorDataset(x, (x.mean((1, 2, 3)) * 20).long().clamp(0, 9)), batch_size=32)


def test_deep_compression_stage_writes_a_file_equal_to_the_returned_model(tmp_path):
    model = _factory()
    ctx = shrink.Context(train=_data(), progress=False, out_dir=tmp_path, checkpoint_dir=tmp_path / "ckpt")
    cfg = DeepCompression(sparsity=0.8, conv_bits=3, linear_bits=2, prune_epochs=2, cluster_epochs=1)
    out = shrink.api.apply(model, cfg, ctx)
    conv, linear = out[0].weight, out[3].weight
    zeros = (int((conv == 0).sum()) + int((linear == 0).sum())) / (conv.numel() + linear.numel())
    assert zeros == pytest.approx(0.8, abs=0.01)
    assert len(torch.unique(conv[conv != 0])) <= 8 and len(torch.unique(linear[linear != 0])) <= 4
    loaded = load_compressed(tmp_path / "model.dcz", _factory)
    for key, value in out.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert any("deep compression file" in n for n in ctx.notes)
    assert not any(isinstance(m, nn.Module) and hasattr(m, "parametrizations") for m in out.modules())
    assert all(p.requires_grad for p in out.parameters())


def test_deep_compression_errors():
    with pytest.raises(DataError, match="training data"):
        shrink.deep_compress(_factory(), DeepCompression())
    with pytest.raises(ConfigError):
        DeepCompression(conv_gap_bits=9)
    with pytest.raises(ConfigError):
        DeepCompression(scope="everywhere")
    one_shot = shrink.deep_compress(_factory(), DeepCompression(sparsity=0.5, prune_epochs=0, cluster_epochs=0))
    assert float((one_shot[3].weight == 0).float().mean()) > 0.3
