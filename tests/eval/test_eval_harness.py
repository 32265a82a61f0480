import json
import os
import time

import pytest
import torch
from torch import nn

from shrink import evaluate, save
from shrink.eval import count_macs, count_params, embedding_fidelity, measure_latency
from shrink.eval.latency import interleaved_latency
from shrink.export.artifact import artifact_bytes
from shrink.pruning import apply_mask


def test_linear_params_and_macs_are_exact():
    m = nn.Linear(16, 8)
    assert count_params(m) == (16 * 8 + 8, 16 * 8 + 8)
    assert count_macs(m, torch.randn(4, 16)) == 4 * 16 * 8


def test_conv_macs_are_exact():
    m = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_macs(m, torch.randn(1, 3, 10, 10)) == 8 * 10 * 10 * 3 * 9


def test_nonzero_counts_masked_weights():
    m = nn.Linear(10, 10, bias=False)
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[:3] = True
    apply_mask(m, mask)
    assert count_params(m) == (100, 30)


def test_size_is_the_real_file_size(tmp_path):
    m = nn.Linear(64, 32)
    path = save(m, tmp_path / "m.shrink")
    assert artifact_bytes(m) == os.path.getsize(path)
    assert os.path.getsize(path) >= (64 * 32 + 32) * 4


def test_latency_stats_are_ordered():
    stats = measure_latency(lambda: torch.randn(64, 64) @ torch.randn(64, 64), batch_size=1, reps=7, warmup=1)
    assert stats.min_ms <= stats.median_ms <= stats.max_ms
    assert stats.reps == 7 and stats.threads == 2


def test_interleaved_latency_orders_and_counts_calls():
    calls = {"fast": 0, "slow": 0}

    def run(name: str, seconds: float):
        def fn():
            calls[name] += 1
            time.sleep(seconds)

        return fn

    fns = [run("fast", 0.0005), run("slow", 0.03)]
    fast, slow = interleaved_latency(fns, rounds=3, calls=6, warmup=1, block_s=0.05)
    assert 0 < fast < slow  # a 60x gap survives any machine noise
    # a warm-up and a probe call each, then per round 1 warm-up + n calls: n fills block_s, between 3 and calls
    assert calls["fast"] == 2 + 3 * (1 + 6) and calls["slow"] == 2 + 3 * (1 + 3)
    assert interleaved_latency([]) == []
    with pytest.raises(ValueError, match="rounds"):
        interleaved_latency([run("fast", 0.0)], rounds=0)


def test_fidelity_of_identical_embeddings_is_perfect():
    e = torch.nn.functional.normalize(torch.randn(50, 16), dim=-1)
    f = embedding_fidelity(e, e)
    assert f["cos_mean"] > 0.9999 and f["cos_min"] > 0.9999 and f["nn_agreement"] == 100.0
    g = embedding_fidelity(e, -e)
    assert g["cos_mean"] < -0.9999


def test_evaluate_report_rows_and_json(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(40, 6)
    y = (x[:, 0] > 0).long()
    model = nn.Linear(6, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[1, 0] = 1.0
        model.bias.zero_()
    data = [(x[:20], y[:20]), (x[20:], y[20:])]
    report = evaluate(
        {"fp32": model}, data, "accuracy", example_inputs=x[:1], batch_sizes=(1, 4), reps=3, warmup=1, progress=False
    )
    row = report.row("fp32")
    assert row.metrics["accuracy"] == 100.0
    assert row.params == 14 and row.macs == 12
    assert set(row.latency) == {"1", "4"}
    report.to_json(tmp_path / "r.json")
    loaded = json.loads((tmp_path / "r.json").read_text())
    assert loaded["rows"][0]["size_bytes"] == row.size_bytes
    assert "fp32" in report.render()


def test_nan_weights_are_refused_before_any_work():
    import pytest

    from shrink import prune
    from shrink.errors import ModelError
    from shrink.pruning import MagnitudePruning

    m = nn.Linear(4, 4)
    with torch.no_grad():
        m.weight[0, 0] = float("nan")
    with pytest.raises(ModelError, match="magnitude_pruning: model: parameter 'weight' contains NaN"):
        prune(m, MagnitudePruning(sparsity=0.5))


def test_a_stage_written_artifact_counts_only_while_weights_are_unchanged():
    from shrink.export.artifact import own_artifact_bytes, state_digest

    m = nn.Linear(8, 8)
    m.shrink_artifact = {"bytes": 123, "digest": state_digest(m)}
    assert own_artifact_bytes(m) == 123
    with torch.no_grad():
        m.weight[0, 0] += 1
    assert own_artifact_bytes(m) is None


def test_interleaved_stats_flag_unstable_rows_and_keep_raw_spread(monkeypatch) -> None:
    import shrink.eval.latency as lat

    clock = {"t": 0.0, "calls": 0}
    monkeypatch.setattr(lat.time, "perf_counter", lambda: clock["t"])

    def steady() -> None:  # 1 ms a call on a fake clock: no machine noise
        clock["t"] += 0.001

    def jittery() -> None:  # every third block of 5 calls is four times slower
        clock["calls"] += 1
        clock["t"] += 0.004 if (clock["calls"] // 5) % 3 == 2 else 0.001

    fast, noisy = lat.interleaved_stats([steady, jittery], rounds=6, calls=3, warmup=1, block_s=0)
    assert fast.spread == pytest.approx(1.0) and not fast.unstable and fast.min_ms == pytest.approx(1.0)
    assert noisy.unstable and noisy.max_ms / noisy.min_ms == pytest.approx(4.0)
    assert noisy.to_dict()["unstable"] is True and fast.batch_size == 1 and fast.reps == 6 * 3


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible() -> None:
    from shrink.eval.metrics import bootstrap_interval

    values = torch.tensor([1.0] * 90 + [0.0] * 10)
    low, high = bootstrap_interval(values)
    assert low < 0.9 < high and high - low < 0.15
    assert (low, high) == bootstrap_interval(values)
    assert bootstrap_interval(torch.ones(50)) == (1.0, 1.0)
