"""Latency batches of a time-major model: ``batch_axis=1`` repeats the example along its batch axis, so "batch 8"
is 8 sequences of the example's length, not 8 time steps; other values are refused."""

import pytest
import torch
from torch import nn

import shrink
from shrink.errors import ConfigError
from shrink.eval.latency import repeat_batch


class TimeMajor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.head = nn.GRU(4, 8), nn.Linear(8, 3)
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x):
        self.seen.append(tuple(x.shape))
        return self.head(self.rnn(x)[0][-1])


def test_repeat_batch_along_axis_one():
    x, lengths = torch.randn(6, 3, 4), torch.tensor([6, 5, 4])
    batch, reps = repeat_batch((x, lengths), 5, axis=1)
    assert batch.shape == (6, 5, 4) and torch.equal(batch[:, 4], x[:, 0])
    assert reps.shape == (5,)  # a rank-1 tensor repeats along axis 0


def test_evaluate_times_whole_sequences_of_a_time_major_model():
    model, x = TimeMajor().eval(), torch.randn(6, 2, 4)
    data = [(x, torch.tensor([0, 1]))]
    report = shrink.evaluate({"gru": model}, data, "accuracy", example_inputs=x, batch_sizes=(1, 8), reps=3,
                             warmup=0, batch_axis=1, progress=False)  # fmt: skip
    assert {(6, 1, 4), (6, 8, 4)} <= set(model.seen)
    assert set(report.rows[0].latency) == {"1", "8"}
    with pytest.raises(ConfigError, match="batch_axis must be 0 or 1"):
        shrink.evaluate({"gru": model}, data, "accuracy", example_inputs=x, batch_axis=2)
