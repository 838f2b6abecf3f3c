"""CNFTransform: closed-form linear fields, log-det against autograd, Hutchinson unbiasedness, NFE, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from probgen.flows import CNFTransform


class Linear(nn.Module):
    """f(x, t) = A x: x(t1) = expm(A (t1 - t0)) x(t0) and log|det| = tr(A) (t1 - t0)."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a.clone())

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x @ self.a.T


class Smooth(nn.Module):
    """A small nonlinear, time-dependent per-sample field."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(dim + 1, 32), nn.Tanh(), nn.Linear(32, dim)).double()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, t[:, None].to(x)], -1))


A = torch.tensor([[-0.5, 1.0], [-1.0, 0.2]], dtype=torch.float64)


@pytest.mark.parametrize("adjoint", [False, True])
def test_linear_field_closed_form(adjoint: bool) -> None:
    T = CNFTransform(Linear(A), t0=0.0, t1=0.7, rtol=1e-10, atol=1e-10, adjoint=adjoint)
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = T(x)
    expm = torch.linalg.matrix_exp(0.7 * A)
    torch.testing.assert_close(y, x @ expm.T, atol=1e-8, rtol=0)
    ladj = T.log_abs_det_jacobian(x, y)
    torch.testing.assert_close(ladj, torch.full((5,), 0.7 * float(A.trace()), dtype=torch.float64),
                               atol=1e-8, rtol=0)
    # inverse: backwards in time, and the cached log-det of the inverse solve belongs to (x', y)
    y2 = y.clone()
    x_back = T.inv(y2)
    torch.testing.assert_close(x_back, x, atol=1e-8, rtol=0)
    torch.testing.assert_close(T.log_abs_det_jacobian(x_back, y2), ladj, atol=1e-8, rtol=0)


def test_log_det_matches_autograd_jacobian_exact_trace() -> None:
    T = CNFTransform(Smooth(3), rtol=1e-9, atol=1e-9, adjoint=False)
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = T(x)
        ladj = T.log_abs_det_jacobian(x, y)
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda v: T(v.unsqueeze(0)).squeeze(0), x[i].clone())
        assert abs(float(torch.linalg.slogdet(jac).logabsdet - ladj[i])) < 1e-4


def test_uncached_pair_recomputes_from_x() -> None:
    T = CNFTransform(Linear(A), rtol=1e-9, atol=1e-9, adjoint=False)
    x1 = torch.randn(3, 2, dtype=torch.float64)
    T(x1)
    x2 = 2 * x1  # not the cached input: the log-det is recomputed from x2 (same value for a linear field)
    ladj = T.log_abs_det_jacobian(x2, torch.zeros_like(x2))
    torch.testing.assert_close(ladj, torch.full((3,), float(A.trace()), dtype=torch.float64), atol=1e-8, rtol=0)


def test_hutchinson_is_unbiased() -> None:
    # N copies of one point in one solve: every copy gets its own probe (fixed over the solve), so the
    # N log-dets are i.i.d. unbiased estimates of the exact one; tolerance 4 standard errors.
    field = Smooth(3)
    x = torch.randn(1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).expand(4000, 3)
    exact = CNFTransform(field, rtol=1e-7, atol=1e-7, adjoint=False)
    hutch = CNFTransform(field, trace="hutchinson", rtol=1e-7, atol=1e-7, adjoint=False)
    torch.manual_seed(3)
    with torch.no_grad():
        y_e = exact(x)
        ref = exact.log_abs_det_jacobian(x, y_e)[0]
        y_h = hutch(x)
        est = hutch.log_abs_det_jacobian(x, y_h)
    torch.testing.assert_close(y_h, y_e, atol=1e-6, rtol=0)  # the path does not depend on the probes
    se = float(est.std()) / math.sqrt(est.numel())
    assert float(est.std()) > 0  # the estimator really is stochastic
    assert abs(float(est.mean() - ref)) < 4 * se


def test_nfe_counts_and_resets() -> None:
    T = CNFTransform(Linear(A), rtol=1e-6, atol=1e-6, adjoint=False)
    x = torch.randn(3, 2, dtype=torch.float64)
    with torch.no_grad():
        T(x)
    first = T.nfe
    assert first > 0
    with torch.no_grad():
        T(x.clone())
    assert T.nfe == first  # reset at the start of each solve, not accumulated
    with torch.no_grad():
        T(x.clone() * 10)
    assert T.nfe > 0


def test_adjoint_gradients_match_backprop_through_solver() -> None:
    grads = []
    for adjoint in (False, True):
        field = Smooth(2)
        T = CNFTransform(field, rtol=1e-9, atol=1e-9, adjoint=adjoint)
        x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
        y = T(x)
        (y.square().sum() + T.log_abs_det_jacobian(x, y).sum()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in field.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-5)


def test_errors() -> None:
    with pytest.raises(TypeError, match="adjoint=True needs vector_field to be an nn.Module"):
        CNFTransform(lambda x, t: x)
    with pytest.raises(ValueError, match="unknown trace 'bad'; valid choices: 'exact', 'hutchinson'"):
        CNFTransform(Linear(A), trace="bad")
    with pytest.raises(ValueError, match="t1 must be > t0"):
        CNFTransform(Linear(A), t0=1.0, t1=0.5)
    with pytest.raises(ValueError, match="needs step_size"):
        CNFTransform(Linear(A), method="rk4")
    with pytest.raises(ValueError, match="unknown method"):
        CNFTransform(Linear(A), method="nope")


def test_fixed_grid_solver() -> None:
    T = CNFTransform(Linear(A), method="rk4", step_size=0.01, adjoint=False)
    x = torch.randn(2, 2, dtype=torch.float64)
    y = T(x)
    torch.testing.assert_close(y, x @ torch.linalg.matrix_exp(A).T, atol=1e-8, rtol=0)
    assert T.nfe == 4 * 100
