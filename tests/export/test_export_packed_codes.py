"""Quantized weights in shrink's model file at their own bit width: PTQ, QAT and binarized models are written with
their codes bit-packed and load back bit-identical; damaged code entries raise FileFormatError."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save
from torch import nn

import shrink
from shrink.errors import FileFormatError, ModelError
from shrink.export.decode import MOVED_MODULES, current_class_path
from shrink.export.size import artifact_size, file_size
from shrink.quant import QAT, Binarize, Int8Static
from shrink.quant.layers.binary_layers import PackedBinaryConv2d, PackedBinaryLinear
from shrink.quant.layers.modules import QuantConv2d, QuantLinear
from shrink.quant.numerics.qparams import qparams_for_tensor

pytestmark = pytest.mark.usefixtures("one_thread")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 36, 19),
        nn.ReLU(),
        nn.Linear(19, 4),
    ).eval()


def _data(n: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(16, 1, 6, 6, generator=g), torch.randint(0, 4, (16,), generator=g)) for _ in range(n)]


def _round_trip(model: nn.Module, tmp_path, x: torch.Tensor) -> nn.Module:
    loaded = shrink.load(shrink.save(model, tmp_path / "m.shrink"), _net)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    return loaded


def _code_bytes(model: nn.Module) -> dict[str, int]:
    size = artifact_size(model)
    return {k: b for k, b in size.tensors.items() if k.endswith("weight_int")}


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_quant_linear_codes_take_bits_per_weight(bits, tmp_path):
    lin = nn.Linear(37, 11)  # 407 weights: a stream that ends mid-byte
    q = QuantLinear(37, 11, True, bits, "none")
    q.set_weight(lin.weight.detach(), qparams_for_tensor(lin.weight.detach(), bits, symmetric=True, axis=0))
    model = nn.Sequential(q)
    stored = artifact_size(model).tensors["0.weight_int"]
    assert stored <= -(-407 * bits // 8)  # the dense stream, or mask + non-zeros when smaller
    loaded = shrink.load(shrink.save(model, tmp_path / "q.shrink"), lambda: nn.Sequential(nn.Linear(37, 11)))
    assert torch.equal(loaded[0].weight_int, q.weight_int) and loaded[0].weight_int.dtype == torch.int8
    x = torch.randn(5, 37)
    assert torch.equal(loaded(x), model(x))


def test_w4_ptq_model_is_written_at_4_bits_and_loads_bit_identical(tmp_path):
    data = _data()
    q = shrink.quantize(_net(), Int8Static(weight_bits=4), calibration=data)
    layers = {n: m for n, m in q.named_modules() if isinstance(m, (QuantLinear, QuantConv2d))}
    assert len(layers) == 4 and all(m.weight_bits == 4 for m in layers.values())
    codes = _code_bytes(q)
    for name, m in layers.items():
        assert codes[f"{name}.weight_int"] <= m.weight_int.numel() // 2 + 1
    _round_trip(q, tmp_path, data[0][0])


def test_w4a4_qat_model_is_written_at_4_bits_and_loads_bit_identical(tmp_path):
    data = _data()
    q = shrink.quantize(_net(), QAT(epochs=1), train=data, calibration=data, progress=False)
    layers = {n: m for n, m in q.named_modules() if isinstance(m, (QuantLinear, QuantConv2d))}
    assert len(layers) == 4 and all(m.weight_bits == 4 and m.act_bits == 4 for m in layers.values())
    codes = _code_bytes(q)
    assert sum(codes.values()) <= sum(m.weight_int.numel() for m in layers.values()) // 2 + len(layers)
    loaded = _round_trip(q, tmp_path, data[0][0])
    assert all(torch.equal(loaded.get_submodule(n).weight_int, m.weight_int) for n, m in layers.items())


def test_binarized_model_keeps_one_bit_per_weight_and_loads_bit_identical(tmp_path):
    data = _data()
    b = shrink.quantize(_net(), Binarize(epochs=1), train=data, calibration=data, progress=False)
    packed = {n: m for n, m in b.named_modules() if isinstance(m, (PackedBinaryConv2d, PackedBinaryLinear))}
    assert set(packed) == {"3", "6"}
    size = artifact_size(b)
    for name, m in packed.items():
        assert size.tensors[f"{name}.packed"] == -(-m.dequantized_weight().numel() // 8)
    assert size.tensors["0.weight_int"] == 8 * 9 and size.tensors["8.weight_int"] == 19 * 4  # 8-bit edge layers
    _round_trip(b, tmp_path, data[0][0])


def test_mostly_zero_codes_are_stored_as_mask_and_packed_non_zeros(tmp_path):
    lin = nn.Linear(64, 16)
    with torch.no_grad():
        lin.weight[:, 16:] = 0  # 75% zeros
    q = QuantLinear(64, 16, True, 4, "none")
    q.set_weight(lin.weight.detach(), qparams_for_tensor(lin.weight.detach(), 4, symmetric=True, axis=0))
    model = nn.Sequential(q)
    path = shrink.save(model, tmp_path / "s.shrink")
    with safe_open(str(path), framework="pt") as f:
        layout = json.loads(f.metadata()["shrink_manifest"])["layout"]
    nonzero = int(torch.count_nonzero(q.weight_int))
    assert layout["0.weight_int"]["codes"] == {"bits": 4, "shape": [16, 64], "dtype": "int8", "sparse": True}
    assert file_size(path).tensors["0.weight_int"] == 1024 // 8 + -(-nonzero * 4 // 8) < 1024 // 2
    loaded = shrink.load(path, lambda: nn.Sequential(nn.Linear(64, 16)))
    assert torch.equal(loaded[0].weight_int, q.weight_int)


def _parts(path):
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["shrink_manifest"]), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def test_damaged_code_entries_raise_file_format_error(tmp_path):
    lin = nn.Linear(10, 3)
    q = QuantLinear(10, 3, True, 3, "none")
    q.set_weight(lin.weight.detach(), qparams_for_tensor(lin.weight.detach(), 3, symmetric=True, axis=0))
    manifest, tensors = _parts(shrink.save(nn.Sequential(q), tmp_path / "good.shrink"))
    key = "0.weight_int"
    info = manifest["layout"][key]["codes"]

    def write(man, ten, name):
        path = tmp_path / name
        path.write_bytes(st_save(ten, metadata={"shrink_manifest": json.dumps(man)}))
        return path

    def with_info(**changes):
        man = json.loads(json.dumps(manifest))
        man["layout"][key]["codes"] = {**info, **changes}
        return man

    cases = [
        (with_info(bits=9), tensors, "does not fit int8"),
        (with_info(dtype="float32"), tensors, "bad dtype"),
        (with_info(shape=[3, 11]), tensors, "must be 13 uint8 bytes"),
        (with_info(shape=[10**6, 10**6]), tensors, "must be"),
        (with_info(sparse=True), tensors, "@mask' is missing"),
        (manifest, {**tensors, f"{key}@codes": torch.zeros(3, dtype=torch.uint8)}, "must be 12 uint8 bytes"),
        (manifest, {**tensors, f"{key}@codes": torch.full((12,), 255, dtype=torch.uint8)}, "padding bits"),
        (manifest, {**tensors, f"{key}@stray": torch.zeros(1)}, "belongs to no sparse or code layout entry"),
    ]
    for i, (man, ten, message) in enumerate(cases):
        path = write(man, ten, f"bad{i}.shrink")
        with pytest.raises(FileFormatError, match=message):
            shrink.load(path, lambda: nn.Sequential(nn.Linear(10, 3)))


def test_version_1_files_still_load(tmp_path):
    model = _net()
    manifest, tensors = _parts(shrink.save(model, tmp_path / "f.shrink"))
    assert manifest["version"] == 2
    path = tmp_path / "v1.shrink"
    path.write_bytes(st_save(tensors, metadata={"shrink_manifest": json.dumps({**manifest, "version": 1})}))
    x = torch.rand(2, 1, 6, 6)
    assert torch.equal(shrink.load(path, _net)(x), model(x))


def test_codes_that_do_not_fit_their_declared_width_are_refused_on_save(tmp_path):
    q = QuantLinear(4, 2, False, 2, "none")
    q.weight_int.fill_(3)  # a 2-bit signed grid holds -2..1
    with pytest.raises(ModelError, match=r"0.weight_int: pack_bits: codes span \[3, 3\], outside the 2-bit range"):
        shrink.save(nn.Sequential(q), tmp_path / "x.shrink")


def test_files_naming_a_layer_module_that_moved_still_load(tmp_path):
    """Files written before quant/ was regrouped name e.g. ``shrink.quant.modules:QuantLinear``."""
    model = shrink.quantize(_net(), Int8Static(observer="minmax"), calibration=_data())
    manifest, tensors = _parts(shrink.save(model, tmp_path / "new.shrink"))
    moved = 0
    for entry in manifest["modules"].values():
        module, _, qualname = entry["class"].partition(":")
        old = {v: k for k, v in MOVED_MODULES.items()}.get(module)
        if old is not None:
            entry["class"], moved = f"{old}:{qualname}", moved + 1
    assert moved >= 3  # the two convs and the linears are quantized layers from shrink.quant.layers.modules
    path = tmp_path / "old.shrink"
    path.write_bytes(st_save(tensors, metadata={"shrink_manifest": json.dumps(manifest)}))
    x = torch.rand(2, 1, 6, 6)
    with torch.no_grad():
        assert torch.equal(shrink.load(path, _net)(x), model(x))
    assert current_class_path("shrink.quant.modules:QuantLinear") == "shrink.quant.layers.modules:QuantLinear"
    assert current_class_path("torch.nn.modules.linear:Linear") == "torch.nn.modules.linear:Linear"
