"""Evaluation harness: task metric, parameters, non-zeros, bytes on disk, MACs, latency."""

from shrink.counts import count_macs, count_params
from shrink.eval.harness import evaluate, machine_info
from shrink.eval.latency import LatencyStats, measure_latency, repeat_batch
from shrink.eval.metrics import accuracy, embedding_fidelity, predict

__all__ = [
    "evaluate",
    "machine_info",
    "count_params",
    "count_macs",
    "LatencyStats",
    "measure_latency",
    "repeat_batch",
    "accuracy",
    "embedding_fidelity",
    "predict",
]
