"""``shrink.save`` refuses the run-time kernel forms (PyTorch's packed int4 / oneDNN int8 weights), which ``load``
could not rebuild, by layer name and with what to do instead; nothing is written."""

import pytest
import torch
from torch import nn

import shrink
from shrink.errors import ModelError
from shrink.quant import Int8Dynamic, WeightOnly, to_torch_int8, to_torch_weight_only


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64)).eval()


@pytest.mark.parametrize("form", ["int4 kernels", "int8 kernels"])
def test_runtime_kernel_forms_are_refused_and_the_stored_form_round_trips(tmp_path, form):
    x = torch.randn(4, 64)
    if form == "int4 kernels":
        stored = shrink.quantize(_mlp(), WeightOnly(bits=4, group_size=32))
        runtime = to_torch_weight_only(stored)[0]
    else:
        stored = shrink.quantize(_mlp(), Int8Dynamic(granularity="token"))
        runtime = to_torch_int8(stored, example_inputs=x)
    with pytest.raises(ModelError, match=r"save m\.shrink: layer '0' is a \w+, a run-time kernel form.*before that"):
        shrink.save(runtime, tmp_path / "m.shrink")
    assert not list(tmp_path.iterdir())
    path = shrink.save(stored, tmp_path / "stored.shrink")  # what the message says to do instead
    with torch.no_grad():
        assert torch.equal(shrink.load(path, _mlp)(x), stored(x))
