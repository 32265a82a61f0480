"""Unstructured pruning and recurrent layers: an LSTM's weights are not masked, so a model holding one is pruned in
its Linear / Conv layers with a warning (and a note) naming the LSTM, and a selector that picks the LSTM is refused."""

import pytest
from torch import nn

import shrink
from shrink.errors import ModelError
from shrink.pruning import MagnitudePruning
from shrink.select import Selector


class Forecaster(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm, self.head = nn.LSTM(2, 16, batch_first=True), nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.lstm(x)[0][:, -1])


def test_the_lstm_is_named_as_not_pruned():
    with pytest.warns(UserWarning, match=r"recurrent layers are not pruned \('lstm': 1,152 weights kept\)"):
        pruned = shrink.prune(Forecaster(), MagnitudePruning(sparsity=0.5))
    assert float((pruned.head.weight == 0).float().mean()) == pytest.approx(0.5)
    assert not (pruned.lstm.weight_hh_l0 == 0).any()


def test_a_selector_that_picks_the_lstm_is_refused():
    cfg = MagnitudePruning(sparsity=0.5, selector=Selector(types=("LSTM",)))
    with pytest.raises(ModelError, match=r"'lstm' is a LSTM, whose weights .* does not mask"):
        shrink.prune(Forecaster(), cfg)
