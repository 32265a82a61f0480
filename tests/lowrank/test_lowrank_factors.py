"""Low-rank factorizations: SVD error vs rank (Eckart–Young), Tucker-2 and CP accuracy against tensorly, layouts."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shrink.lowrank import (
    cp_budget_rank,
    cp_conv,
    cp_factors,
    energy_rank,
    svd_budget_rank,
    svd_linear,
    tucker2_conv,
    tucker2_factors,
    tucker_budget_ranks,
)
from shrink.lowrank.cp import cp_reconstruct


def _linear(out_f=24, in_f=40, seed=0):
    torch.manual_seed(seed)
    layer = nn.Linear(in_f, out_f)
    with torch.no_grad():  # a decaying spectrum, like trained weights
        u, _, vh = torch.linalg.svd(torch.randn(out_f, in_f), full_matrices=False)
        layer.weight.copy_(u @ torch.diag(torch.logspace(0, -2, min(out_f, in_f))) @ vh)
    return layer


def _dense(factorized):
    eye = torch.eye(factorized[0].in_features)
    with torch.no_grad():
        return (factorized(eye) - factorized[1].bias).T


def test_svd_error_decreases_with_rank_and_equals_discarded_singular_values():
    layer = _linear()
    s = torch.linalg.svdvals(layer.weight.detach().double())
    errors = []
    for rank in (1, 4, 8, 16, 24):
        approx = _dense(svd_linear(layer, rank)).double()
        err = float((approx - layer.weight.double()).norm().detach())
        assert err == pytest.approx(float(s[rank:].pow(2).sum().sqrt()), rel=1e-3, abs=1e-5)
        errors.append(err)
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-5
    x = torch.randn(5, 40)
    full = svd_linear(layer, 24)
    assert torch.allclose(full(x), layer(x), atol=1e-5)
    assert isinstance(full, nn.Sequential) and [type(m) for m in full] == [nn.Linear, nn.Linear]


def test_rank_choice_by_energy_and_budget():
    s = torch.tensor([3.0, 2.0, 1.0, 0.5])
    total = float((s**2).sum())
    assert energy_rank(s, 1.0) == 4
    assert energy_rank(s, 9 / total) == 1
    assert energy_rank(s, 9.01 / total) == 2
    r = svd_budget_rank(128, 256, 0.5)
    assert r * (128 + 256) <= 0.5 * 128 * 256 < (r + 1) * (128 + 256)
    r_out, r_in = tucker_budget_ranks(64, 32, 9, 0.5)
    assert 32 * r_in + r_in * r_out * 9 + r_out * 64 <= 0.5 * 64 * 32 * 9
    rank = cp_budget_rank(64, 32, 3, 3, 0.5)
    assert rank * (64 + 32 + 6) <= 0.5 * 64 * 32 * 9 < (rank + 1) * (64 + 32 + 6)


def _conv(cout=16, cin=8, k=3, stride=1, padding=1, seed=0):
    torch.manual_seed(seed)
    return nn.Conv2d(cin, cout, k, stride, padding, bias=True)


def test_tucker2_approximates_the_conv_and_matches_tensorly():
    from tensorly.decomposition import partial_tucker

    conv = _conv(stride=2)
    w = conv.weight.detach().double()
    x = torch.randn(2, 8, 9, 9)
    errors = []
    for r_out, r_in in ((2, 2), (4, 4), (8, 6), (16, 8)):
        core, u_out, u_in = tucker2_factors(conv.weight, r_out, r_in, "hooi")
        approx = torch.einsum("rskl,or,is->oikl", core, u_out, u_in)
        err = float((approx - w).norm() / w.norm())
        (t_core, (t_out, t_in)), _ = partial_tucker(w.numpy(), rank=[r_out, r_in], modes=[0, 1], n_iter_max=20)
        t_approx = torch.einsum("rskl,or,is->oikl", torch.tensor(t_core), torch.tensor(t_out), torch.tensor(t_in))
        assert err <= float((t_approx - w).norm() / w.norm()) + 1e-6
        hosvd = tucker2_factors(conv.weight, r_out, r_in, "hosvd")
        hosvd_err = float((torch.einsum("rskl,or,is->oikl", *hosvd) - w).norm() / w.norm())
        assert err <= hosvd_err + 1e-9
        errors.append(err)
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-6
    full = tucker2_conv(conv, 16, 8)
    assert torch.allclose(full(x), conv(x), atol=1e-5)
    half = tucker2_conv(conv, 8, 4)
    assert [m.kernel_size for m in half] == [(1, 1), (3, 3), (1, 1)] and half[1].stride == (2, 2)
    rel = float((half(x) - conv(x)).norm() / conv(x).norm())
    assert rel < 1.0


def test_cp_recovers_a_low_rank_kernel_and_lays_out_separable_convs():
    from tensorly.decomposition import parafac

    torch.manual_seed(0)
    true_rank = 5
    factors = [torch.randn(n, true_rank) for n in (12, 6, 3, 3)]
    w = torch.einsum("ar,br,cr,dr->abcd", *factors)
    lam, found = cp_factors(w, true_rank, n_iter=100)
    ours = float((cp_reconstruct(lam, found) - w.double()).norm() / w.norm())
    theirs_cp = parafac(w.double().numpy(), rank=true_rank, n_iter_max=100, init="svd", tol=1e-10)
    theirs = torch.einsum("r,ar,br,cr,dr->abcd", *(torch.tensor(t) for t in [theirs_cp[0], *theirs_cp[1]]))
    assert ours < 1e-3 and ours <= float((theirs - w.double()).norm() / w.norm()) + 1e-3

    conv = nn.Conv2d(6, 12, 3, stride=(2, 1), padding=(1, 0), bias=True)
    with torch.no_grad():
        conv.weight.copy_(w)
    sep = cp_conv(conv, true_rank, n_iter=100)
    assert [m.kernel_size for m in sep] == [(1, 1), (3, 1), (1, 3), (1, 1)]
    assert sep[1].groups == sep[2].groups == true_rank
    x = torch.randn(2, 6, 10, 10)
    assert sep(x).shape == conv(x).shape
    assert float((sep(x) - conv(x)).norm() / conv(x).norm()) < 1e-3
    # the layers compute exactly a convolution with the reconstructed kernel
    lam, found = cp_factors(conv.weight, 3, n_iter=50)
    approx = cp_reconstruct(lam, found).float()
    sep3 = cp_conv(conv, 3, n_iter=50)
    assert torch.allclose(sep3(x), F.conv2d(x, approx, conv.bias, conv.stride, conv.padding), atol=1e-4)
    assert math.isfinite(float(sep3(x).sum()))
