"""LSQ and STE fake quantization: gradients flow inside the range, stop outside, and reach the step size."""

import math

import torch

from shrink.quant.algorithms.lsq import LsqQuantizer, grad_scale, lsq_range, round_ste
from shrink.quant.numerics.qparams import compute_qparams, fake_quantize
from shrink.quant.numerics.ste import fake_quantize_ste


def test_round_ste_identity_gradient():
    x = torch.tensor([0.2, 1.6, -2.5], requires_grad=True)
    y = round_ste(x)
    assert y.tolist() == [0.0, 2.0, -2.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]


def test_grad_scale_scales_only_backward():
    x = torch.tensor([3.0], requires_grad=True)
    y = grad_scale(x, 0.25)
    assert y.item() == 3.0
    y.backward()
    assert x.grad.item() == 0.25


def test_lsq_forward_is_on_grid_and_clipped():
    q = LsqQuantizer(bits=4, signed=True)
    q.init_from(torch.tensor(0.5))
    x = torch.tensor([0.1, 0.3, -0.74, 100.0, -100.0])
    y = q(x)
    assert y.tolist() == [0.0, 0.5, -0.5, 3.5, -4.0]
    assert lsq_range(4, False) == (0, 15)


def test_lsq_gradients_inside_outside_and_step():
    q = LsqQuantizer(bits=4, signed=False)
    q.init_from(torch.tensor(0.1))
    x = torch.tensor([0.05, 0.42, 0.9, 3.0, -1.0], requires_grad=True)  # range [0, 1.5]
    q(x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    # d x̂/ds = round(x/s) - x/s inside, Qp above, Qn below; times g = 1/sqrt(numel * Qp)
    v = x.detach() / 0.1
    inside = torch.round(v) - v
    expected = (inside[:3].sum() + 15 + 0) / math.sqrt(5 * 15)
    assert q.step.grad is not None and torch.allclose(q.step.grad, expected.reshape(1), atol=1e-5)


def test_lsq_per_channel_lazy_init():
    q = LsqQuantizer(bits=4, signed=True, channel_axis=0, num_channels=3)
    w = torch.randn(3, 8) * torch.tensor([[1.0], [0.1], [10.0]])
    q(w)
    assert bool(q.initialized)
    expected = 2 * w.abs().mean(dim=1) / math.sqrt(7)
    assert torch.allclose(q.scale(), expected)


def test_fake_quantize_ste_matches_forward_and_clips_gradient():
    qp = compute_qparams(-1.0, 1.0, bits=4, symmetric=True)
    x = torch.tensor([-2.0, -0.3, 0.0, 0.55, 0.99, 5.0], requires_grad=True)
    y = fake_quantize_ste(x, qp)
    assert torch.equal(y.detach(), fake_quantize(x.detach(), qp))
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
