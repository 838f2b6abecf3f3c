"""LinearGaussian operators: adjoints and SVDs checked against their dense matrices (float64)."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch

import probgen as pg
from probgen.infer.posterior import (
    BlurOperator,
    DenseOperator,
    LinearGaussian,
    MaskOperator,
    SubsampleOperator,
    make_operator,
)


def _operators():
    g = torch.Generator().manual_seed(0)
    return [
        MaskOperator(torch.rand(2, 4, 4, generator=g) > 0.5),
        MaskOperator(torch.tensor([True, False, True, True])),
        DenseOperator(torch.randn(3, 5, generator=g, dtype=torch.float64)),
        DenseOperator(torch.randn(7, 4, generator=g, dtype=torch.float64)),  # m > n
        BlurOperator((2, 5, 5), size=3, width=0.8),
        BlurOperator((6,), size=3, kind="box"),
        SubsampleOperator((2, 4, 6), factor=2),
        SubsampleOperator((6,), factor=3),
    ]


@pytest.mark.parametrize("op", _operators(), ids=lambda op: repr(op))
def test_adjoint_is_the_transpose(op):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, *op.event_shape, generator=g, dtype=torch.float64)
    y = torch.randn(3, op.out_dim, generator=g, dtype=torch.float64)
    a = op.dense()
    assert a.shape == (op.out_dim, op.in_dim)
    torch.testing.assert_close(op(x), x.reshape(3, -1) @ a.T)
    torch.testing.assert_close(op.adjoint(y).reshape(3, -1), y @ a)
    torch.testing.assert_close((op(x) * y).sum(), (x * op.adjoint(y)).sum())


@pytest.mark.parametrize("op", _operators(), ids=lambda op: repr(op))
def test_svd_reconstructs_the_dense_operator(op):
    n, m = op.in_dim, op.out_dim
    svd = op.svd()
    k = svd.singulars.shape[0]
    assert k == min(m, n)
    vt = svd.Vt(torch.eye(n, dtype=torch.float64).reshape(n, *op.event_shape)).T  # (n, n) = Vᵀ
    ut = svd.Ut(torch.eye(m, dtype=torch.float64)).T  # (m, m) = Uᵀ
    torch.testing.assert_close(vt @ vt.T, torch.eye(n, dtype=torch.float64))
    torch.testing.assert_close(ut @ ut.T, torch.eye(m, dtype=torch.float64))
    s = torch.zeros(m, n, dtype=torch.float64)
    s[range(k), range(k)] = svd.singulars
    torch.testing.assert_close(ut.T @ s @ vt, op.dense())
    # V and U invert Vt and Ut
    x = torch.randn(2, *op.event_shape, dtype=torch.float64)
    torch.testing.assert_close(svd.V(svd.Vt(x)), x)
    y = torch.randn(2, m, dtype=torch.float64)
    torch.testing.assert_close(svd.U(svd.Ut(y)), y)


def test_linear_gaussian_is_the_normal_of_the_operator():
    a = torch.randn(3, 2, dtype=torch.float64)
    lik = LinearGaussian(a, 0.3)
    x, y = torch.randn(2, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    d = lik(x)
    assert d.event_shape == (3,) and d.batch_shape == ()
    torch.testing.assert_close(d.log_prob(y), dist.Normal(a @ x, 0.3).to_event(1).log_prob(y))
    xb = torch.randn(4, 2, dtype=torch.float64)
    assert lik(xb).batch_shape == (4,)
    assert lik.sample(xb).shape == (4, 3)


def test_make_operator_and_bad_arguments():
    assert isinstance(make_operator("blur", (1, 4, 4)), BlurOperator)
    assert make_operator("noise", (3,)).dense().equal(torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="operator"):
        make_operator("warp", (3,))
    with pytest.raises(ValueError, match="mask"):
        make_operator("inpaint", (3,))
    with pytest.raises(ValueError, match="size must be odd"):
        BlurOperator((4,), size=4)
    with pytest.raises(ValueError, match="factor"):
        SubsampleOperator((5,), factor=2)
    with pytest.raises(ValueError, match="noise_std"):
        LinearGaussian(torch.eye(2), 0.0)
    with pytest.raises(TypeError, match="mask"):
        MaskOperator(torch.ones(3))
    with pytest.raises(ValueError, match="x must have shape"):
        MaskOperator(torch.ones(3, dtype=torch.bool))(torch.ones(2, 4))


def test_public_names():
    assert pg.infer.LinearGaussian is LinearGaussian
    assert callable(pg.infer.posterior_sample)
