"""The one ODE core (probgen.ops.ode.odeint_logdet) against closed forms, and its gradients."""

from __future__ import annotations

import math

import torch

from probgen.ops import odeint_logdet


def test_linear_field_log_det_and_end_point_are_exact():
    # v(x, t) = -a x: x(1) = e^{-a} x, log|det| = -a D
    a, x = 0.7, torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    end, logdet, nfe = odeint_logdet(lambda x, t: -a * x, x, 0.0, 1.0)
    assert torch.allclose(end, math.exp(-a) * x, atol=1e-6)
    assert torch.allclose(logdet, torch.full((5,), -3 * a, dtype=torch.float64), atol=1e-6)
    assert nfe > 0


def test_gradient_is_finite_where_the_solver_error_is_zero():
    # at x = 0 every stage is exactly 0, so the error estimate is 0: step-size control must not send NaN back
    x = torch.zeros(4, 2, dtype=torch.float64, requires_grad=True)
    end, logdet, _ = odeint_logdet(lambda x, t: -0.5 * x, x, 0.0, 1.0)
    (grad,) = torch.autograd.grad((end**2).sum() + logdet.sum(), x)
    assert torch.isfinite(grad).all() and float(grad.abs().max()) == 0.0
    y = torch.ones(1, 2, dtype=torch.float64, requires_grad=True)  # d/dy ||e^{-1/2} y||² = 2 e^{-1} y
    end, _, _ = odeint_logdet(lambda x, t: -0.5 * x, y, 0.0, 1.0)
    (grad,) = torch.autograd.grad((end**2).sum(), y)
    assert torch.allclose(grad, 2 * math.exp(-1.0) * y.detach(), atol=1e-5)
