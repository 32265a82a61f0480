"""ZeroQ: the BN-statistics loss decreases, the model is left as it was, and the ``zeroq`` config quantizes
without reading any real data."""

import pytest
import torch
from torch import nn

import shrink
from shrink.errors import ConfigError, ModelError
from shrink.quant import ZeroQ
from shrink.quant.algorithms.zeroq_data import bn_statistics_loss, distill_inputs
from shrink.quant.layers.modules import QuantConv2d
from shrink.quant.static import Int8Static


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 36, 3),
    )
    net.train()
    with torch.no_grad():  # learn real running statistics from a shifted input distribution
        for _ in range(20):
            net(torch.rand(32, 1, 6, 6) * 2 + 0.5)
    return net.eval()


def test_bn_statistics_loss_decreases_and_hooks_are_removed():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    history: list[float] = []
    x = distill_inputs(net, (1, 6, 6), num_samples=16, batch_size=16, iterations=60, lr=0.2, history=history)
    assert x.shape == (16, 1, 6, 6) and not x.requires_grad
    assert history[-1] < 0.2 * history[0]
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # weights and running stats intact
    assert all(p.requires_grad for p in net.parameters()) and not net.training
    assert all(not m._forward_pre_hooks for m in net.modules())
    assert x.mean() > 0.5  # the synthetic inputs moved toward the distribution the BN layers saw


def test_loss_function_and_model_without_bn():
    loss_fn, remove = bn_statistics_loss(_net())
    assert float(loss_fn(torch.randn(8, 1, 6, 6))) > 0
    remove()
    with pytest.raises(ModelError, match="no BatchNorm"):
        bn_statistics_loss(nn.Sequential(nn.Linear(3, 3)))


class _Untouchable:
    """Real data that must never be read."""

    def __iter__(self):
        raise AssertionError("ZeroQ read real data")


def test_zeroq_config_quantizes_without_real_data():
    notes: list[str] = []
    cfg = ZeroQ(num_samples=16, batch_size=8, iterations=20, ptq=Int8Static(observer="minmax"))
    q = shrink.quantize(
        _net(),
        cfg,
        example_inputs=torch.zeros(1, 1, 6, 6),
        calibration=_Untouchable(),
        train=_Untouchable(),
        val=_Untouchable(),
        progress=False,
        notes=notes,
    )
    assert isinstance(q[0], QuantConv2d) and q[0].input_qparams[0] > 0
    assert "no real data used" in notes[0] and "16 synthetic inputs" in notes[0]
    assert q(torch.rand(4, 1, 6, 6)).shape == (4, 3)
    assert ZeroQ(**{k: v for k, v in cfg.to_dict().items() if k != "type"}) == cfg  # YAML round trip


def test_zeroq_errors():
    with pytest.raises(ConfigError, match="example_inputs"):
        shrink.quantize(_net(), ZeroQ(iterations=1), progress=False)
    with pytest.raises(ConfigError, match="input_mean"):
        shrink.quantize(
            _net(), ZeroQ(iterations=1, input_mean=0.0), example_inputs=torch.zeros(1, 1, 6, 6), progress=False
        )
