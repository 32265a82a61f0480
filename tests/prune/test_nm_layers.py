"""Packed N:M layers: exact dense reconstruction, N/M of the values stored, fine-tuning keeps the pattern,
save/load round trip with equal outputs, compressed size on disk."""

import os

import pytest
import torch
from torch import nn

import shrink
from shrink.api import Context, apply
from shrink.errors import ModelError, SelectorError
from shrink.pruning import NMSparseConv, NMSparseLinear, NMSparsity, check_nm, get_mask, pack_nm
from shrink.pruning.nm import NM_CPU_NOTE
from shrink.train import fit


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)  # 3 input channels: no whole group of 4
        self.conv = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.depth = nn.Conv2d(16, 32, 3, stride=2, padding=1, groups=2)
        self.fc = nn.Linear(32 * 2 * 2, 16)
        self.out = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(torch.relu(self.stem(x))))
        return self.out(torch.relu(self.fc(torch.relu(self.depth(x)).flatten(1))))


def _batches(n=3):
    g = torch.Generator().manual_seed(5)
    return [(torch.randn(8, 3, 4, 4, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(n)]


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8)])
@pytest.mark.parametrize(
    "layer",
    [
        nn.Linear(32, 6),
        nn.Conv2d(16, 8, 3, stride=2, padding=1),
        nn.Conv2d(16, 8, 3, groups=2, bias=False),
        nn.Conv1d(8, 4, 3),
    ],
)
def test_packed_layer_reconstructs_exactly_and_stores_n_over_m(n, m, layer):
    packed = pack_nm(layer, n, m)
    w = layer.weight.detach()
    keep = packed.keep_mask()
    assert torch.equal(packed.dense_weight(), w * keep)
    assert check_nm(packed.dense_weight(), n, m, exact=False) and check_nm(keep, n, m)
    assert packed.values.numel() == w.numel() * n // m
    assert packed.bits.dtype == torch.uint8 and packed.bits.numel() == (w.numel() + 7) // 8
    x = torch.randn(2, w.shape[1] * getattr(layer, "groups", 1), *(5,) * (w.dim() - 2))
    ref = (
        nn.functional.linear(x, w * keep, layer.bias) if w.dim() == 2 else layer._conv_forward(x, w * keep, layer.bias)
    )
    assert torch.allclose(packed(x), ref, atol=1e-6)
    total, nonzero = packed.shrink_param_count()
    assert total == w.numel() + (layer.bias.numel() if layer.bias is not None else 0)
    assert nonzero <= total - w.numel() * (m - n) // m


def test_nm_sparsity_skips_incompatible_layers_and_says_so():
    ctx = Context(progress=False)
    model = apply(Net(), NMSparsity(n=2, m=4), ctx)
    assert isinstance(model.stem, nn.Conv2d) and isinstance(model.conv, NMSparseConv)
    assert isinstance(model.fc, NMSparseLinear) and isinstance(model.out, NMSparseLinear)
    assert "stem (Conv2d, weight (16, 3, 3, 3))" in ctx.notes[0]
    assert NM_CPU_NOTE in ctx.notes[-1]
    for layer in (model.conv, model.depth, model.fc, model.out):
        assert check_nm(layer.keep_mask(), 2, 4)
    with pytest.raises(SelectorError, match="stem"):
        apply(Net(), NMSparsity(n=2, m=4, incompatible="error"), Context(progress=False))
    with pytest.raises(SelectorError, match="no selected layer"):
        apply(Net(), NMSparsity(selector={"include": ["stem"]}), Context(progress=False))


def test_fine_tuning_with_masks_keeps_the_pattern_then_packs():
    start = Net()
    ctx = Context(train=_batches(), progress=False)
    unpacked = apply(start, NMSparsity(n=4, m=8, epochs=2, lr=1e-2, pack=False), ctx)
    for layer in (unpacked.conv, unpacked.depth, unpacked.fc, unpacked.out):
        assert check_nm(get_mask(layer), 4, 8) and check_nm(layer.weight, 4, 8, exact=False)
    packed = apply(start, NMSparsity(n=4, m=8, epochs=2, lr=1e-2), Context(train=_batches(), progress=False))
    x = torch.randn(2, 3, 4, 4)
    assert torch.allclose(packed(x), unpacked(x), atol=1e-5)


def test_training_packed_layers_keeps_the_pattern():
    model = apply(Net(), NMSparsity(n=2, m=4), Context(progress=False))
    bits = model.fc.bits.clone()
    before = model.fc.values.detach().clone()
    fit(model, _batches(), epochs=1, lr=1e-2, progress=False)
    assert torch.equal(model.fc.bits, bits) and not torch.equal(model.fc.values, before)
    assert check_nm(model.fc.dense_weight(), 2, 4, exact=False)


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8)])
def test_save_load_round_trip_and_size(tmp_path, n, m):
    dense = Net()
    model = apply(dense, NMSparsity(n=n, m=m), Context(progress=False))
    path = shrink.save(model, tmp_path / "nm.shrink")
    loaded = shrink.load(path, Net)
    assert isinstance(loaded.fc, NMSparseLinear) and isinstance(loaded.conv, NMSparseConv)
    assert torch.equal(loaded.fc.bits, model.fc.bits)
    x = torch.randn(3, 3, 4, 4)
    assert torch.equal(loaded(x), model(x))
    dense_bytes = os.path.getsize(shrink.save(dense, tmp_path / "dense.shrink"))
    # values (n/m of 4 bytes) + 1 bit per weight, against 4 bytes per weight; the stem stays dense
    assert os.path.getsize(path) < (n / m + 1 / 32 + 0.12) * dense_bytes


def test_loading_a_broken_pattern_is_an_error():
    layer = NMSparseLinear(8, 4, n=2, m=4)
    state = pack_nm(nn.Linear(8, 4), 2, 4).state_dict()
    state["bits"] = torch.full_like(state["bits"], 0xFF)
    with pytest.raises(ModelError, match="not a valid 2:4 pattern"):
        layer.load_state_dict(state)


def test_counts_and_onnx_export_of_packed_model(tmp_path):
    from shrink.counts import count_params
    from shrink.export.onnx import OnnxModel

    dense = Net()
    model = apply(dense, NMSparsity(n=2, m=4), Context(progress=False))
    total, nonzero = count_params(model)
    assert total == count_params(dense)[0]
    packed_weights = sum(
        mod.num_groups * 4 for mod in model.modules() if isinstance(mod, (NMSparseConv, NMSparseLinear))
    )
    assert nonzero <= total - packed_weights // 2
    x = torch.randn(2, 3, 4, 4)
    path = shrink.export.onnx(model, tmp_path / "nm.onnx", x)
    out = torch.as_tensor(OnnxModel(path, threads=1)(x))
    assert torch.allclose(out, model(x), atol=1e-5)
