import copy

import pytest
import torch
from torch import nn

from shrink.errors import ConfigError
from shrink.eval.language import perplexity
from shrink.llm.blocks import BlockInputs, block_of, decoder_blocks
from shrink.llm.weight_only import (
    Int4WeightLinear,
    Int8WeightLinear,
    _linears,
    choose_act_order,
    gptq_group_codes,
    held_out_choice,
    quantize_weight_only,
    rtn_codes,
)
from shrink.zoo.llm import tiny_llama


def _bf16_ref(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x.bfloat16().float() @ w.T


@pytest.mark.parametrize("bits,group", [(8, 128), (4, 32), (4, 64)])
def test_packed_kernels_match_dequantized_reference(bits, group):
    w = torch.randn(96, 128)
    codes, scales, _ = rtn_codes(w, bits, group)
    assert codes.int().abs().max() <= 2 ** (bits - 1)
    layer = Int8WeightLinear(codes, scales) if bits == 8 else Int4WeightLinear(codes, scales, group)
    deq = codes.float() * scales.repeat_interleave(group, 1)
    assert torch.allclose(layer.dequantize(), deq, atol=0.02 * deq.abs().max())
    x = torch.randn(3, 5, 128)
    ref = _bf16_ref(x.reshape(-1, 128), deq).reshape(3, 5, 96)
    err = (layer(x) - ref).norm() / ref.norm()
    assert err < 0.01
    assert layer(x).dtype == torch.float32


def test_int4_grid_keeps_each_group_extreme_and_can_use_all_16_levels():
    torch.manual_seed(2)
    w = torch.randn(64, 128)
    w[0, 5] = 9.0  # a positive extreme: mapped to code -8 by a negative scale, one level finer than 9 / 7
    codes, scales, _ = rtn_codes(w, 4, 32)
    full = scales.repeat_interleave(32, 1)
    deq = (codes.float() * full).reshape(64, 4, 32)
    at = w.reshape(64, 4, 32).abs().argmax(-1, keepdim=True)  # each group's largest weight is stored exactly
    assert torch.allclose(deq.gather(-1, at), w.reshape(64, 4, 32).gather(-1, at), atol=1e-5)
    assert scales[0, 0] < 0 and codes[0, 5] == -8 and abs(float(codes[0, 5] * scales[0, 0]) - 9.0) < 1e-6
    # per group, the grid chosen is never worse than the positive amax / 7 grid
    amax = w.reshape(64, 4, 32).abs().amax(-1).repeat_interleave(32, 1) / 7
    positive = torch.clamp(torch.round(w / amax), -8, 7) * amax
    err = lambda d: (d - w).pow(2).reshape(64, 4, 32).sum(-1)  # noqa: E731
    assert (err(codes.float() * full) <= err(positive) + 1e-6).all()


def test_int4_storage_is_half_a_byte_per_weight():
    codes, scales, _ = rtn_codes(torch.randn(64, 256), 4, 64)
    layer = Int4WeightLinear(codes, scales, 64)
    assert layer.weight_int4.numel() * layer.weight_int4.element_size() == 64 * 256 // 2


def test_gptq_reduces_output_error_on_correlated_inputs():
    torch.manual_seed(1)
    base = torch.randn(2048, 16)
    x = base @ torch.randn(16, 128) + 0.05 * torch.randn(2048, 128)  # low-rank, correlated inputs
    w = torch.randn(64, 128)
    h = (x.T.double() @ x.double()) / x.shape[0]
    errs = {}
    for name, (codes, scales, _) in {"rtn": rtn_codes(w, 4, 32), "gptq": gptq_group_codes(w, h, 4, 32)}.items():
        deq = codes.float() * scales.repeat_interleave(32, 1)
        errs[name] = ((x @ (deq - w).T).norm() / (x @ w.T).norm()).item()
    assert errs["gptq"] < 0.7 * errs["rtn"]


@pytest.mark.parametrize("bits,method", [(8, "rtn"), (4, "rtn"), (4, "gptq"), (4, "awq"), (4, "awq+gptq"), (8, "awq")])
def test_tiny_llama_weight_only(bits, method):
    model = tiny_llama()
    ids = torch.randint(0, 256, (4, 32))
    q = quantize_weight_only(model, bits, 32, method, calibration=list(ids))
    kind = Int8WeightLinear if bits == 8 else Int4WeightLinear
    assert isinstance(q.model.layers[1].mlp.down_proj, kind) and isinstance(q.lm_head, kind)
    scaled = q.model.layers[1].mlp.down_proj.input_scale
    assert (scaled is not None) == method.startswith("awq")
    assert isinstance(model.model.layers[1].mlp.down_proj, nn.Linear)  # the input model is untouched
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, q(input_ids=ids).logits
    cos = nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()
    assert cos > (0.999 if bits == 8 else 0.98)


def test_act_order_on_a_tiny_llama():
    model = tiny_llama()
    ids = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    q = quantize_weight_only(model, 4, 32, "gptq", calibration=list(ids), act_order=True)
    plain = quantize_weight_only(model, 4, 32, "gptq", calibration=list(ids))
    down = (q.model.layers[1].mlp.down_proj, plain.model.layers[1].mlp.down_proj)
    assert not torch.equal(down[0].dequantize(), down[1].dequantize())  # the option reaches GPTQ
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, q(input_ids=ids).logits
    assert nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item() > 0.98


@pytest.mark.parametrize("method", ["rtn", "gptq", "awq+gptq"])
def test_clipped_scales_on_a_tiny_llama(method):
    model = tiny_llama()
    ids = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    q = quantize_weight_only(model, 4, 32, method, calibration=list(ids), clip=True)
    plain = quantize_weight_only(model, 4, 32, method, calibration=list(ids))
    down = (q.model.layers[1].mlp.down_proj, plain.model.layers[1].mlp.down_proj)
    assert not torch.equal(down[0].dequantize(), down[1].dequantize())  # the option reaches the rounding
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, q(input_ids=ids).logits
    assert nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item() > 0.98


def test_sequential_rounds_each_block_on_the_outputs_of_the_quantized_blocks_before_it():
    model = tiny_llama()
    ids = list(torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0)))
    windows = [{"input_ids": i.reshape(1, -1), "use_cache": False} for i in ids]
    blocks = decoder_blocks(model, _linears(model, True), windows)
    assert [b[0] for b in blocks] == ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj", "lm_head"]
    assert len(blocks[0]) == 7 and blocks[0][-1] == "model.layers.0.mlp.down_proj"
    seq = quantize_weight_only(model, 4, 32, "awq+gptq", calibration=ids, clip=True, sequential=True)
    plain = quantize_weight_only(model, 4, 32, "awq+gptq", calibration=ids, clip=True)

    def weights(q: nn.Module, name: str) -> torch.Tensor:
        return q.get_submodule(name).dequantize()

    assert torch.equal(weights(seq, "model.layers.0.mlp.down_proj"), weights(plain, "model.layers.0.mlp.down_proj"))
    assert not torch.equal(weights(seq, "model.layers.1.mlp.down_proj"), weights(plain, "model.layers.1.mlp.down_proj"))
    with torch.no_grad():
        a, b = model(input_ids=torch.stack(ids)).logits, seq(input_ids=torch.stack(ids)).logits
    assert nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item() > 0.98
    assert block_of("model.layers.12.mlp.up_proj") == "model.layers.12" and block_of("lm_head") is None
    with pytest.raises(ConfigError, match="sequential=True needs GPTQ or clip"):
        quantize_weight_only(model, 4, 32, "awq", calibration=ids, sequential=True)


def test_sequential_replays_each_block_on_its_recorded_inputs_exactly_as_full_forwards_would(monkeypatch):
    model = tiny_llama()
    ids = list(torch.randint(0, 256, (3, 24), generator=torch.Generator().manual_seed(1)))
    windows = [{"input_ids": i.reshape(1, -1), "use_cache": False} for i in ids]
    layers = _linears(model, True)
    inputs = BlockInputs(model, decoder_blocks(model, layers, windows), windows)
    assert list(inputs.calls) == ["model.layers.0", "model.layers.1"]  # a plain stack: replayed
    assert all(len(c) == 3 for c in inputs.calls.values())
    replayed = quantize_weight_only(model, 4, 32, "gptq", calibration=ids, clip=True, sequential=True)
    monkeypatch.setattr(BlockInputs, "_chained", lambda self: False)  # every block measured by full forwards
    assert not BlockInputs(model, decoder_blocks(model, layers, windows), windows).calls
    full = quantize_weight_only(model, 4, 32, "gptq", calibration=ids, clip=True, sequential=True)
    for name in layers:
        a, b = replayed.get_submodule(name).dequantize(), full.get_submodule(name).dequantize()
        assert torch.allclose(a, b, rtol=0, atol=1e-6), name


class _TwoBlocks(nn.Module):
    def __init__(self, stacked: bool) -> None:
        super().__init__()
        self.layers, self.head, self.stacked = (
            nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)]),
            nn.Linear(8, 4),
            stacked,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers[1](self.layers[0](x)) if self.stacked else self.layers[0](x) + self.layers[1](x)
        return self.head(h)


@pytest.mark.parametrize("stacked", [True, False])
def test_block_inputs_replay_only_a_stack_whose_blocks_read_the_one_before(stacked):
    model = _TwoBlocks(stacked)
    windows = [torch.randn(2, 8), torch.randn(3, 8)]
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    groups = decoder_blocks(model, layers, windows)
    assert groups == [["layers.0"], ["layers.1"], ["head"]]
    inputs = BlockInputs(model, groups, windows)
    assert list(inputs.calls) == (["layers.0", "layers.1"] if stacked else [])
    seen = {"layers.0": lambda w: w, "layers.1": model.layers[0] if stacked else (lambda w: w)}
    with torch.no_grad():
        for name, read in seen.items():  # either way, each block's statistics are those of a full forward
            rows = torch.cat([read(w) for w in windows]).double()
            h = inputs.hessians([name], {name: layers[name]}, {})[name]
            assert torch.allclose(h, rows.T @ rows / rows.shape[0])
            inputs.advance([name])


def test_asymmetric_int4_layers_hold_zero_points_and_follow_the_float_model():
    model = tiny_llama()
    ids = list(torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0)))
    asym = quantize_weight_only(model, 4, 32, "awq+gptq", calibration=ids, asymmetric=True, lm_head_bits=8)
    sym = quantize_weight_only(model, 4, 32, "awq+gptq", calibration=ids, lm_head_bits=8)
    down = asym.model.layers[0].mlp.down_proj
    assert isinstance(down, Int4WeightLinear) and down.zero_points is not None
    assert isinstance(asym.lm_head, Int8WeightLinear)  # the int8 layer stays symmetric
    assert sym.model.layers[0].mlp.down_proj.zero_points is None
    # the kernel's per-group term is -zero * scale: (code - zero) * scale, up to bf16
    term, scale = down.scales_zeros[..., 1].T.float(), down.scales_zeros[..., 0].T.float()
    assert torch.allclose(term, -down.zero_points.float() * scale, rtol=2**-7, atol=0)
    with torch.no_grad():
        ref = model(input_ids=torch.stack(ids)).logits
        errs = [float((q(input_ids=torch.stack(ids)).logits - ref).norm() / ref.norm()) for q in (asym, sym)]
    assert errs[0] < 0.1 and errs[0] != errs[1]  # Gaussian random weights: no one-sided groups to gain on here
    with pytest.raises(ConfigError, match="asymmetric=True applies to int4 layers"):
        quantize_weight_only(model, 8, 32, calibration=ids, asymmetric=True)


def test_act_order_auto_decides_on_held_out_calibration_windows_and_builds_that_choice():
    model = tiny_llama()
    ids = list(torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0)))
    choice, held = choose_act_order(model, 4, 32, "gptq", ids)
    assert set(held) == {False, True} and all(1.0 < p < 1e4 for p in held.values())
    assert choice == (held[True] < held[False])
    auto = quantize_weight_only(model, 4, 32, "gptq", calibration=ids, act_order="auto")
    explicit = quantize_weight_only(model, 4, 32, "gptq", calibration=ids, act_order=choice)
    down = (auto.model.layers[1].mlp.down_proj, explicit.model.layers[1].mlp.down_proj)
    assert torch.equal(down[0].dequantize(), down[1].dequantize())
    with pytest.raises(ConfigError, match="no GPTQ step"):
        quantize_weight_only(model, 4, 32, "awq", calibration=ids, act_order="auto")
    with pytest.raises(ConfigError, match="at least 2 calibration windows"):
        choose_act_order(model, 4, 32, "gptq", ids[:1])


def test_held_out_choice_fits_on_every_other_window_and_judges_on_the_rest():
    model = tiny_llama()
    ids = list(torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0)))
    fitted_on = []

    def build(setting, fit):
        fitted_on.append([w.reshape(-1) for w in fit])
        if setting == "float":
            return model
        broken = copy.deepcopy(model)  # every logit scaled 20x: far more confident, and mostly wrong
        broken.lm_head.weight = nn.Parameter(broken.lm_head.weight.detach() * 20)
        return broken

    choice, held = held_out_choice(build, ("broken", "float"), ids)
    assert choice == "float" and held["float"] < held["broken"]
    assert all(len(f) == 2 and torch.equal(f[0], ids[0]) and torch.equal(f[1], ids[2]) for f in fitted_on)
    assert held["float"] == pytest.approx(perplexity(model, torch.stack(ids[1::2])), rel=1e-6)
    tie, _ = held_out_choice(lambda s, fit: model, ("first", "second"), ids)
    assert tie == "first"
    with pytest.raises(ConfigError, match="no setting"):
        held_out_choice(build, (), ids)


@pytest.mark.parametrize("method", ["rtn", "awq+gptq"])
def test_lm_head_can_keep_8_bits_under_int4_layers(method):
    model = tiny_llama()
    ids = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    q = quantize_weight_only(model, 4, 32, method, calibration=list(ids), lm_head_bits=8)
    assert isinstance(q.lm_head, Int8WeightLinear) and isinstance(q.model.layers[0].self_attn.q_proj, Int4WeightLinear)
    plain = quantize_weight_only(model, 4, 32, method, calibration=list(ids))
    with torch.no_grad():
        a = model(input_ids=ids).logits
        errs = [(m(input_ids=ids).logits - a).norm() / a.norm() for m in (q, plain)]
    assert errs[0] < errs[1]  # the head's 8 bits take away part of the error


def test_bad_settings_are_named():
    model = tiny_llama()
    with pytest.raises(ConfigError, match="gptq"):
        quantize_weight_only(model, 4, 32, "gptq")
    with pytest.raises(ConfigError, match="not a multiple of 48"):
        quantize_weight_only(model, 4, 48)
    with pytest.raises(ConfigError, match="bits"):
        quantize_weight_only(model, 3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="lm_head_bits 2"):
        quantize_weight_only(model, 4, lm_head_bits=2)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="method must be one of"):
        quantize_weight_only(model, 4, 32, "awq-gptq")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="awq"):
        quantize_weight_only(model, 4, 32, "awq")
    with pytest.raises(ConfigError, match="clip=True needs calibration"):
        quantize_weight_only(model, 4, 32, clip=True)


def test_awq_factors_keep_the_float_product():
    """The factor multiplies the input; with the weight scaled by its inverse the layer computes the same product."""
    codes, scales, _ = rtn_codes(torch.randn(64, 128), 8, 128)
    layer = Int8WeightLinear(codes, scales)
    x = torch.randn(4, 128)
    plain = layer(x)
    layer.scale_input(torch.full((128,), 2.0))
    assert torch.allclose(layer(x / 2), plain, rtol=1e-2, atol=1e-2)
    with pytest.raises(ConfigError, match="expected 128"):
        layer.scale_input(torch.ones(7))
