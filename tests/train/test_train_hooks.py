"""fit's hooks: ``on_start`` gets the optimizer (resumed state included) before the first epoch, ``on_epoch_end``
runs after each epoch."""

import torch
from torch import nn

from shrink.train import fit


def _setup():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(2)]
    return model, batches


def test_on_start_gets_the_optimizer_once_before_the_first_epoch():
    model, batches = _setup()
    events: list[object] = []
    fit(model, batches, epochs=3, progress=False, on_start=events.append, on_epoch_end=events.append)
    optimizer = events[0]
    assert isinstance(optimizer, torch.optim.Adam) and events[1:] == [0, 1, 2]
    assert {id(p) for group in optimizer.param_groups for p in group["params"]} == {id(p) for p in model.parameters()}
    assert all(optimizer.state[p]["exp_avg"].abs().sum() > 0 for p in model.parameters())  # the one that trained


def test_on_start_sees_the_resumed_state(tmp_path):
    model, batches = _setup()
    fit(model, batches, epochs=2, progress=False, checkpoint_dir=tmp_path)
    steps: list[float] = []
    resumed, _ = _setup()
    fit(resumed, batches, epochs=3, progress=False, checkpoint_dir=tmp_path,
        on_start=lambda opt: steps.append(float(opt.state[resumed.weight]["step"])))  # fmt: skip
    assert steps == [4.0]  # two epochs of two batches were done before the resume
