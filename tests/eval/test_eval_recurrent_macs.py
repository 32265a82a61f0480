"""MACs of recurrent layers: PyTorch's flop counter sees none in its fused LSTM, so LSTMs are counted from their
shapes, the same way the counter counts a GRU (gates x hidden x (input + hidden) per layer, direction and step)."""

import pytest
import torch
from torch import nn

from shrink.counts import count_macs


@pytest.mark.parametrize(("cell", "gates"), [(nn.LSTM, 4), (nn.GRU, 3), (nn.RNN, 1)])
@pytest.mark.parametrize("batch_first", [True, False])
def test_recurrent_macs_follow_the_shapes(cell, gates, batch_first):
    model = nn.Sequential(cell(8, 16, num_layers=2, bidirectional=True, batch_first=batch_first))
    x = torch.randn(3, 10, 8)  # 30 steps x samples either way
    per_step = 2 * gates * 16 * (8 + 16) + 2 * gates * 16 * (32 + 16)  # layer 0, then layer 1 reading 2 x 16
    assert count_macs(model, x) == 30 * per_step


def test_a_projected_lstm():
    model = nn.Sequential(nn.LSTM(8, 16, proj_size=4))
    x = torch.randn(5, 2, 8)
    assert count_macs(model, x) == 10 * (4 * 16 * (8 + 4) + 16 * 4)


def test_an_lstm_called_by_keyword():
    class Keyword(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(8, 16)

        def forward(self, x):
            return self.lstm(input=x)[0]

    assert count_macs(Keyword(), torch.randn(5, 2, 8)) == 10 * 4 * 16 * (8 + 16)
