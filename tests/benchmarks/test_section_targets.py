"""Each section's targets: a result exactly at the goal meets it, one just past it misses, a failed run is no pass."""

import math

from benchmarks import targets as T


def _met(ts) -> list:
    return [t.met for t in ts]


def test_ptq_digits() -> None:
    assert _met(T.ptq_digits_targets(99.0, 98.7, 98.0, 97.9)) == [True, True, True]
    assert _met(T.ptq_digits_targets(99.0, 98.69, 97.99, 97.99)) == [False, False, False]


def test_advanced_quant() -> None:
    assert _met(T.advanced_quant_targets(99.0, 97.5, 98.0, 98.5, 0.99)) == [True, True, True]
    assert _met(T.advanced_quant_targets(99.0, 98.0, 97.49, 98.49, 0.989)) == [False, False, False]


def test_deep_compression_and_lowrank() -> None:
    assert _met(T.deep_compression_targets(30_000, 1_000, 99.0, 98.0, True)) == [True, True, True]
    assert _met(T.deep_compression_targets(30_000, 1_001, 99.0, 97.99, False)) == [False, False, False]
    assert T.lowrank_target(1.0).met and not T.lowrank_target(1.01).met


def test_kd() -> None:
    assert _met(T.kd_targets(98.0, 97.9, 99.0)) == [True, True]
    assert _met(T.kd_targets(97.9, 97.9, 98.91)) == [False, False]  # a tie is not "better"


def test_unstructured() -> None:
    assert _met(T.unstructured_targets(99.0, 98.5, 200, 1000)) == [True, True]
    assert _met(T.unstructured_targets(99.0, 98.49, 201, 1000)) == [False, False]


def test_channel_digits() -> None:
    assert T.channel_digits_target(0.5, 0.6, 0.5).met
    assert not T.channel_digits_target(0.51, 0.6, None).met  # just over the 0.5-point goal
    assert not T.channel_digits_target(0.4, 0.6, 0.39).met  # worse than Torch-Pruning
    assert T.channel_digits_target(math.nan, 0.3, None).met  # lasso failed: l1 still judged
    assert not T.channel_digits_target(math.nan, math.nan, None).met


def test_resnet_speed() -> None:
    fast = {"e1": 2.5, "e8": 2.6, "o1": 2.5, "o8": 2.7, "macs": 3.7}
    assert _met(T.resnet_speed_targets(fast, {"e1": 2.55, "e8": 2.6, "macs": 3.7})) == [True, True]
    slow = {"e1": 2.49, "e8": 2.6, "o1": 2.6, "o8": 2.49, "macs": 3.7}
    assert _met(T.resnet_speed_targets(slow, None)) == [False, False]
    assert _met(T.resnet_speed_targets(fast, {"e1": 2.6, "e8": 2.6, "macs": 3.7})) == [False, True]  # TP >3% faster
    assert _met(T.resnet_speed_targets({}, None)) == [False, False]  # shrink failed: nothing met by accident
