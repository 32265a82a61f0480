"""Target functions of the other benchmark sections: fixed goals, a result that just misses is a miss, and a
comparison with nothing to compare against is n/a (not met)."""

import math

from benchmarks.common import Section
from benchmarks.peers import PeerOutcome
from benchmarks.peers_quant import Row, _targets
from benchmarks.search import BUDGET_FRACTION, latency_budget_target

from shrink.eval.latency import LatencyStats


def test_latency_budget_is_a_fixed_fraction_of_fp32() -> None:
    assert BUDGET_FRACTION == 0.85
    assert latency_budget_target(8.5, 10.0, "x").met
    assert not latency_budget_target(8.51, 10.0, "x").met  # just misses
    assert not latency_budget_target(math.nan, math.nan, "no allocation").met


def _row(method: str, tool: str, scheme: str, nn: float, ms: float) -> Row:
    outcome = PeerOutcome(lambda *a: None, 1, 0.0, 0.0, "x")
    lat = {b: LatencyStats(ms * b, ms * b, ms * b, 3, 1, 2, b) for b in (1, 32)}
    return Row(method, tool, scheme, "x", outcome, {"nn_agreement": nn}, lat)


def test_peer_targets_just_miss_and_na_without_a_faithful_peer() -> None:
    fp32 = _row("fp32 (torch eager)", "torch", "float", 100.0, 5.0)
    ours = _row("shrink int8", "shrink", "W8A8", 98.0, 1.0)
    section = Section("t")
    _targets([fp32, ours, _row("torchao int8 dynamic", "torchao", "W8A8", 97.5, 1.01)], section)
    assert [t.met for t in section.targets] == [True, True]
    section = Section("t")
    _targets([fp32, ours, _row("torchao int8 dynamic", "torchao", "W8A8", 97.5, 0.99)], section)
    assert [t.met for t in section.targets] == [False, False]
    section = Section("t")
    _targets([fp32, ours, _row("torchao int8 dynamic", "torchao", "W8A8", 90.0, 0.5)], section)
    assert [t.met for t in section.targets] == [None, None]  # no peer keeps the fidelity: nothing to beat
    assert fp32.scheme == "float"  # float rows are never counted as peers


def test_sdpa_copy_switches_a_transformers_eager_attention_and_leaves_the_model_alone() -> None:
    import torch
    from benchmarks.baselines import sdpa_copy
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    model = BertModel(config, add_pooling_layer=False).eval()
    model.set_attn_implementation("eager")
    twin = sdpa_copy(model)
    assert twin is not None and twin is not model
    assert model.config._attn_implementation == "eager" and twin.config._attn_implementation == "sdpa"
    ids = torch.randint(0, 50, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.no_grad():
        a = model(input_ids=ids, attention_mask=mask).last_hidden_state
        b = twin(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert sdpa_copy(torch.nn.Linear(2, 2)) is None  # nothing to switch


def test_float_baselines_add_sdpa_twins_of_the_fastest_compiled_rows(monkeypatch, tmp_path) -> None:
    import torch
    from benchmarks.common import Built
    from transformers import BertConfig, BertModel

    from benchmarks import baselines as b

    def record(kind):  # a fake builder: what each row would compile, without compiling it
        def build(model, *args):
            inner = getattr(model, "model", model)
            dtype = next(model.parameters()).dtype
            attention = getattr(getattr(inner, "config", None), "_attn_implementation", "-")
            return Built(lambda x: None, 0, 0.0, f"{kind} {dtype} {attention} {args[-1]}")

        return build

    monkeypatch.setattr(b, "compiled_row", record("compiled"))
    monkeypatch.setattr(b, "packaged_row", record("packaged"))
    monkeypatch.setattr(b, "_ort", lambda *a: Built(lambda x: None, 0, 0.0, "ort"))
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    model = BertModel(config, add_pooling_layer=False).eval()
    model.set_attn_implementation("eager")
    rows = b.float_baselines(model, None, [None], tmp_path / "fp32.onnx", bf16=True, aot=True)
    assert set(rows) == {b.EAGER, b.COMPILED, b.BF16, b.ORT, b.AOT_BF16, b.EAGER_SDPA, b.BF16_SDPA, b.AOT_BF16_SDPA}
    assert set(rows) <= set(b.FLOAT_ROWS)  # every one of them can be the fastest float row
    assert rows[b.COMPILED].execution.startswith("compiled torch.float32 eager fp32, torch.compile")
    assert (
        rows[b.BF16_SDPA].execution == "compiled torch.bfloat16 sdpa bf16, torch.compile (native bf16), SDPA attention"
    )
    assert rows[b.AOT_BF16_SDPA].execution.startswith("packaged torch.bfloat16 sdpa bf16, AOTInductor package")
    assert model.config._attn_implementation == "eager" and next(model.parameters()).dtype == torch.float32
    plain = b.float_baselines(torch.nn.Linear(4, 4), None, [None], tmp_path / "l.onnx", bf16=False, aot=True)
    assert set(plain) == {b.EAGER, b.COMPILED, b.ORT, b.AOT_FP32}  # nothing to switch: no SDPA rows
