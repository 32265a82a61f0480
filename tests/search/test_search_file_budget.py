"""Mixed precision writes what it simulates: low-bit layers whose codes are bit-packed in the model file, a byte
budget held on the written file, and a model that shrink.load rebuilds bit-identical."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shrink
from shrink.api import Context, apply
from shrink.autosearch.allocate import Option, allocate
from shrink.autosearch.apply import apply_policy, calibrate_inputs
from shrink.autosearch.file_budget import HEADER_BYTES_PER_MODULE, check_file, fit_file
from shrink.autosearch.mixed_precision import MixedPrecision
from shrink.autosearch.options import file_bytes
from shrink.errors import ConfigError
from shrink.export.size import artifact_size
from shrink.hw import trace_layers
from shrink.hw.policy import LayerChoice
from shrink.quant.layers.lowbit import LowBitConv, LowBitLinear
from shrink.zoo.digits import DigitsCNN

pytestmark = pytest.mark.usefixtures("one_thread")

DIGITS_LAYERS = ["features.0", "features.3", "features.7", "classifier.1", "classifier.4"]


class _Mixed(nn.Module):
    """Conv1d, Conv2d and Linear layers, some with odd weight counts and no bias."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv1d(3, 5, 3, padding=1)
        self.c2 = nn.Conv2d(5, 7, 3, padding=1, bias=False)
        self.l1 = nn.Linear(7 * 9, 13)
        self.l2 = nn.Linear(13, 11)
        self.l3 = nn.Linear(11, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c1(x))  # (n, 5, 9)
        y = torch.relu(self.c2(y.reshape(-1, 5, 3, 3))).flatten(1)  # (n, 63)
        return self.l3(torch.relu(self.l2(torch.relu(self.l1(y)))))


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(2)
    return [(torch.randn(8, 3, 9, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(2)]


def test_every_bit_width_is_stored_as_predicted_and_loads_bit_identical(tmp_path):
    model, data = _Mixed().eval(), _batches()
    x = data[0][0]
    policy = {
        "c1": LayerChoice(bits=4),
        "c2": LayerChoice(bits=2, sparsity=0.5),
        "l1": LayerChoice(bits=4, sparsity=0.7),
        "l2": LayerChoice(bits=16),
        "l3": LayerChoice(bits=8),
    }
    low = [n for n, c in policy.items() if c.bits <= 8]
    out = apply_policy(model, policy, input_qparams=calibrate_inputs(model, low, data))
    assert isinstance(out.c1, LowBitConv) and out.c1.dims == 1 and isinstance(out.c2, LowBitConv)
    assert isinstance(out.l2, LowBitLinear) and out.l2.weight_half is not None and out.l2.input_scale is None
    size = artifact_size(out)
    for spec in trace_layers(model, x):
        stored = size.of_modules([spec.name])
        predicted = file_bytes(spec, policy[spec.name])
        if policy[spec.name].sparsity == 0 and policy[spec.name].bits > 2:
            assert stored == predicted, spec.name  # dense: the cost is the exact layout
        else:
            assert stored <= predicted, spec.name  # zeros from rounding can only make it smaller
    loaded = shrink.load(shrink.save(out, tmp_path / "m.shrink"), _Mixed)
    assert type(loaded.c1) is LowBitConv and loaded.l3.bits == 8 and loaded.l3.input_bits == 8
    with torch.no_grad():
        assert torch.equal(loaded(x), out(x))
    assert "simulated" in loaded.shrink_execution


def test_digits_mixed_precision_file_meets_the_uniform_4_bit_budget(digits_teacher, digits, tmp_path):
    ctx = Context(example_inputs=digits.example_inputs, calibration=digits.calibration, progress=False)
    out = apply(digits_teacher, MixedPrecision(budget="bytes", budget_bits=4), ctx)
    assert {n for n, m in out.named_modules() if isinstance(m, (LowBitConv, LowBitLinear))} == set(DIGITS_LAYERS)
    specs = {s.name: s for s in trace_layers(digits_teacher, digits.example_inputs)}
    budget = sum(file_bytes(specs[n], LayerChoice(bits=4)) for n in DIGITS_LAYERS)
    # 4-bit codes, fp32 scales per output channel, fp32 biases of the two Linears, input grids
    assert budget == 89_632 // 2 + 4 * (32 + 64 + 64 + 128 + 10) + 4 * (128 + 10) + 8 * 5
    size = artifact_size(out)
    other = sum(size.tensors.values()) - size.of_modules(DIGITS_LAYERS)  # the BatchNorm tensors
    modules = sum(1 for _ in out.modules())
    assert size.of_modules(DIGITS_LAYERS) <= budget
    assert size.total <= budget + other + HEADER_BYTES_PER_MODULE * modules
    assert size.total < 0.2 * artifact_size(digits_teacher).total  # was ~0.99 when weights stayed fp32
    assert any(f"written file {size.total:,} B" in n for n in ctx.notes)
    loaded = shrink.load(shrink.save(out, tmp_path / "mixed.shrink"), DigitsCNN)
    x = next(iter(digits.val))[0]
    with torch.no_grad():
        assert torch.equal(loaded(x), out(x))
    bits = {n: getattr(loaded.get_submodule(n), "bits", 32) for n in DIGITS_LAYERS}
    assert bits == {n: c["bits"] for n, c in out.shrink_policy.items()}


def test_a_file_over_budget_is_solved_again_tighter_or_refused(digits_teacher, digits):
    specs = [s for s in trace_layers(digits_teacher, digits.example_inputs) if s.name in DIGITS_LAYERS]
    choices = [LayerChoice(bits=b) for b in (2, 4, 8)]

    def options(scale: float) -> dict[str, list[Option]]:  # a cost model that undercounts the file by ``scale``
        return {s.name: [Option(c, 8.0 - c.bits, {"bytes": scale * file_bytes(s, c)}) for c in choices] for s in specs}

    budget = sum(file_bytes(s, LayerChoice(bits=4)) for s in specs)
    qp = calibrate_inputs(digits_teacher, DIGITS_LAYERS, digits.calibration)
    under = options(0.8)
    first = allocate(under, {"bytes": budget})
    assert check_file(apply_policy(digits_teacher, first.policy, input_qparams=qp), DIGITS_LAYERS, budget).excess > 0
    out, plan, checks = fit_file(digits_teacher, under, first, budget, input_qparams=qp)
    assert len(checks) > 1 and checks[-1].excess <= 0 and checks[-1].budgeted <= budget
    assert plan.policy != first.policy
    tight = sum(file_bytes(s, LayerChoice(bits=2)) for s in specs)
    with pytest.raises(ConfigError, match="misses the byte budget"):
        fit_file(digits_teacher, options(0.5), allocate(options(0.5), {"bytes": tight}), tight, input_qparams=qp)


@pytest.mark.slow
def test_minilm_mixed_precision_file_meets_its_budget(tmp_path):
    """Slow: the real pretrained MiniLM (~90 MB file), one encoder block's six layers allocated."""
    from shrink.zoo.minilm import load_minilm, minilm_data

    model, data = load_minilm(), minilm_data(limit=160)
    layers = [n for n, m in model.named_modules() if n.startswith("encoder.encoder.layer.0.") and type(m) is nn.Linear]
    cfg = MixedPrecision(
        budget="bytes",
        budget_bits=4,
        bits=(2, 4, 8),
        sensitivity_batches=1,
        selector={"include": [r"re:encoder\.encoder\.layer\.0\..*"]},
    )
    ctx = Context(example_inputs=data.example_inputs, calibration=data.calibration, progress=False)
    out = apply(model, cfg, ctx)
    specs = {s.name: s for s in trace_layers(model, data.example_inputs)}
    budget = sum(file_bytes(specs[n], LayerChoice(bits=4)) for n in layers)
    size = artifact_size(out)
    other = sum(size.tensors.values()) - size.of_modules(layers)
    assert size.of_modules(layers) <= budget
    assert size.total <= budget + other + HEADER_BYTES_PER_MODULE * sum(1 for _ in out.modules())
    assert size.total < artifact_size(model).total - 6 * 384 * 384 * 3  # ~7/8 of the block's fp32 weights gone
    loaded = shrink.load(shrink.save(out, tmp_path / "minilm.shrink"), load_minilm)
    batch = next(iter(data.calibration))
    with torch.no_grad():
        assert torch.equal(loaded(**batch), out(**batch))
