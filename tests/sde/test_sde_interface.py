"""The documented solver interface of probgen.sde and the moved / renamed modules (issue 16, points 3–4)."""

from __future__ import annotations

import importlib
import math
import warnings

import pytest
import torch

import probgen.ops
import probgen.samplers
from probgen.sde import SDE, VESDE, VPSDE, DiscreteVPSDE, SubVPSDE, linear_betas

DT = torch.float64
SDES = [VPSDE(), SubVPSDE(), VESDE(), DiscreteVPSDE(linear_betas(100))]


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_solver_interface_equals_the_validated_members(sde: SDE):
    t = torch.tensor([0.1, 0.5, 0.9], dtype=DT)
    x = torch.randn(3, 2, dtype=DT, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sde.f(x, t), sde.drift(x, t))
    torch.testing.assert_close(sde.g(t), sde.diffusion(t))
    torch.testing.assert_close(sde.mean_scale(t), sde.marginal_scale(t))
    torch.testing.assert_close(sde.std(t), sde.marginal_std(t))
    torch.testing.assert_close(sde.step_coefficients(x, t, 0.01)[1], sde.discretize(x, t, 0.01)[1])
    torch.testing.assert_close(sde.log_prior(x), sde.prior_log_prob(x))
    score = lambda y, s: -y  # noqa: E731
    torch.testing.assert_close(sde.reverse_f(score, x, t, weight=0.5), sde.ode_drift(score, x, t))
    # Tweedie: E[x0 | xt] for x0 = c (a point mass) is c
    c = torch.full_like(x, 0.7)
    a, s = sde.mean_scale(t)[:, None], sde.std(t)[:, None]
    xt = a * c + s * x
    torch.testing.assert_close(sde.tweedie(-(xt - a * c) / s**2, xt, t), c)


def test_discrete_vp_bridge_is_smooth_and_exact_at_the_knots():
    betas = linear_betas(50)
    sde = DiscreteVPSDE(betas)
    knots = torch.arange(0, 51, dtype=DT) / 50
    abar = torch.cat([torch.ones(1, dtype=DT), torch.cumprod(1 - betas, 0)])
    torch.testing.assert_close(sde.mean_scale(knots) ** 2, abar)
    # beta(t) = -2 d log alpha / dt is continuous (no jumps at the knots) and positive
    h = 1e-7
    left, right = sde.g(knots[1:-1] - h) ** 2, sde.g(knots[1:-1] + h) ** 2
    assert torch.allclose(left, right, rtol=1e-4)
    tt = torch.linspace(1e-4, 1 - 1e-4, 999, dtype=DT)
    beta = sde.g(tt) ** 2
    assert bool((beta > 0).all())
    num = -2 * (torch.log(sde.mean_scale(tt + 1e-6)) - torch.log(sde.mean_scale(tt - 1e-6))) / 2e-6
    torch.testing.assert_close(beta, num, rtol=1e-5, atol=1e-8)


def test_moved_modules_and_no_shadowing():
    # a function no longer shadows its submodule
    assert importlib.import_module("probgen.ops.trace").divergence is probgen.ops.divergence
    assert importlib.import_module("probgen.samplers.unadjusted").langevin is probgen.samplers.langevin
    # DDPM schedules live in probgen.sde; the old names warn and give the same objects
    with pytest.warns(DeprecationWarning, match="probgen.sde"):
        assert probgen.samplers.DiscreteVPSDE is DiscreteVPSDE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = importlib.import_module("probgen.samplers.schedules")
    assert old.linear_betas is linear_betas
    assert math.isclose(float(old.make_betas("linear", 10)[0]), 1e-4)
