"""Binarization: sign with the clipped-identity STE, 1-bit packing round trips, packed layers equal the trained
ones, shrink.save writes ~1/32 of fp32 for binary layers, the ``binarize`` config keeps first/last at 8 bits."""

import pytest
import torch
from torch import nn

import shrink
from shrink.errors import DataError
from shrink.export.artifact import artifact_bytes
from shrink.quant import Binarize
from shrink.quant.layers.binary_layers import (
    BinaryConv2d,
    BinaryLinear,
    PackedBinaryConv2d,
    PackedBinaryLinear,
    pack_signs,
    sign_ste,
    unpack_signs,
)
from shrink.quant.layers.modules import QuantConv2d, QuantLinear


def test_sign_ste_values_and_clipped_identity_gradient():
    x = torch.tensor([-2.0, -1.0, -0.3, 0.0, 0.7, 1.0, 3.0], requires_grad=True)
    y = sign_ste(x)
    assert y.tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (3, 5, 3, 3), (64, 129)])
def test_pack_unpack_round_trip(shape):
    w = torch.randn(shape)
    packed = pack_signs(w)
    assert packed.dtype == torch.uint8 and packed.numel() == (w.numel() + 7) // 8
    assert torch.equal(unpack_signs(packed, shape), torch.where(w >= 0, 1.0, -1.0))
    with pytest.raises(ValueError, match="uint8 bytes"):
        unpack_signs(packed[:-1], (w.numel() + 8,))


def test_packed_layers_equal_training_layers():
    torch.manual_seed(0)
    conv = BinaryConv2d.from_float(nn.Conv2d(4, 6, 3, padding=1, stride=2))
    lin = BinaryLinear.from_float(nn.Linear(10, 3))
    with torch.no_grad():
        conv.threshold.uniform_(-0.2, 0.2)
        lin.threshold.uniform_(-0.2, 0.2)
    x, v = torch.randn(2, 4, 9, 9), torch.randn(5, 10)
    with torch.no_grad():
        assert torch.allclose(PackedBinaryConv2d.from_binary(conv)(x), conv(x), atol=1e-5)
        assert torch.allclose(PackedBinaryLinear.from_binary(lin)(v), lin(v), atol=1e-5)
    alpha = PackedBinaryLinear.from_binary(lin).alpha
    assert torch.allclose(alpha, lin.weight.abs().mean(dim=1))  # XNOR-Net per-channel scale


def test_binary_weight_gradients_flow_to_latent_weights_and_thresholds():
    lin = BinaryLinear.from_float(nn.Linear(6, 3))
    lin(torch.randn(4, 6) * 0.5).sum().backward()
    assert lin.weight.grad.abs().sum() > 0 and lin.threshold.grad.abs().sum() > 0


def test_saved_file_is_about_one_32nd_of_fp32(tmp_path):
    fp32 = nn.Sequential(nn.Linear(512, 512, bias=False))
    packed = nn.Sequential(PackedBinaryLinear.from_binary(BinaryLinear.from_float(fp32[0])))
    weight_bytes = 512 * 512 * 4
    assert artifact_bytes(packed) < weight_bytes / 32 + 8 * 1024  # bits + per-channel alpha/threshold + header
    assert artifact_bytes(fp32) > weight_bytes
    path = shrink.save(packed, tmp_path / "b.shrink")
    loaded = shrink.load(path, lambda: nn.Sequential(nn.Linear(512, 512, bias=False)))
    assert isinstance(loaded[0], PackedBinaryLinear)
    x = torch.randn(3, 512)
    assert torch.equal(loaded(x), packed(x))
    assert loaded[0].shrink_param_count() == (512 * 512 + 1024, 512 * 512 + 1024)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 36, 16),
        nn.ReLU(),
        nn.Linear(16, 4),
    ).eval()


def test_binarize_config_keeps_edges_at_8_bits_and_packs_the_rest(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(16, 1, 6, 6, generator=g), torch.randint(0, 4, (16,), generator=g)) for _ in range(3)]
    notes: list[str] = []
    b = shrink.quantize(_net(), Binarize(epochs=1), train=data, calibration=data, progress=False, notes=notes)
    assert isinstance(b[0], QuantConv2d) and b[0].weight_bits == 8 and b[0].act_mode == "none"
    assert isinstance(b[9], QuantLinear) and b[9].weight_bits == 8
    assert isinstance(b[3], PackedBinaryConv2d) and isinstance(b[7], PackedBinaryLinear)
    assert b[3].threshold.abs().sum() > 0  # thresholds initialised from calibration means
    assert "1-bit" in notes[0] and "simulated" in notes[1]
    out = b(data[0][0])
    assert out.shape == (16, 4) and torch.isfinite(out).all()
    loaded = shrink.load(shrink.save(b, tmp_path / "b.shrink"), _net)
    assert torch.allclose(loaded(data[0][0]), out, atol=1e-6)
    with pytest.raises(DataError, match="training data"):
        shrink.quantize(_net(), Binarize(epochs=1), calibration=data, progress=False)


@pytest.mark.parametrize("groups", [16, 4])
def test_grouped_and_depthwise_convs_binarize_pack_and_round_trip(tmp_path, groups):
    def net():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=groups), nn.ReLU(),
            nn.Conv2d(16, 16, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
        ).eval()  # fmt: skip

    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(2)]
    b = shrink.quantize(net(), Binarize(epochs=1), train=data, calibration=[x for x, _ in data], progress=False)
    grouped = b[2]
    assert isinstance(grouped, PackedBinaryConv2d) and grouped.groups == groups
    assert grouped.threshold.shape == (16,)  # one per input channel, not per channel of one group
    out = b(data[0][0])
    assert torch.allclose(shrink.load(shrink.save(b, tmp_path / "g.shrink"), net)(data[0][0]), out, atol=1e-6)


def test_linear_layers_threshold_their_feature_dimension_on_3d_inputs(tmp_path):
    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)).eval()

    g = torch.Generator().manual_seed(2)
    data = [(torch.randn(8, 5, 16, generator=g) + 1.0, torch.randint(0, 4, (8, 5), generator=g)) for _ in range(2)]
    b = shrink.quantize(net(), Binarize(epochs=0), train=data, calibration=[x for x, _ in data], progress=False)
    middle = b[2]
    assert isinstance(middle, PackedBinaryLinear) and middle.threshold.shape == (32,)
    # the calibration means of the features the layer reads (the first layer's ReLU outputs; that layer was still
    # float then, it is stored at 8 bits afterwards)
    with torch.no_grad():
        feats = torch.cat([b[1](b[0](x)).reshape(-1, 32) for x, _ in data])
    assert torch.allclose(middle.threshold, feats.mean(0), atol=0.02)
    assert b(data[0][0]).shape == (8, 5, 4)
