"""Schedules, DDPM ancestral sampling and DDIM (generation, η, inversion) against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from probgen.samplers.ddim import ddim_invert, sample_ancestral, sample_ddim
from probgen.sde.discrete import (
    DiscreteSchedule,
    DiscreteVPSDE,
    cosine_betas,
    linear_betas,
    make_betas,
    uniform_timesteps,
)

DT = torch.float64
MU = torch.tensor([1.0, -0.5], dtype=DT)
SIGMA = torch.tensor([[1.0, 0.6], [0.6, 0.61]], dtype=DT)


def gaussian_eps(schedule):
    def eps(x, index):
        abar = schedule.marginal_alpha(schedule.index_to_time(index).to(x.dtype)) ** 2
        cov = abar[:, None, None] * SIGMA + (1 - abar)[:, None, None] * torch.eye(2, dtype=DT)
        r = x - abar.sqrt()[:, None] * MU
        return (1 - abar).sqrt()[:, None] * torch.linalg.solve(cov, r.unsqueeze(-1)).squeeze(-1)

    return eps


def assert_gaussian_moments(x, mean, cov, k=3.0):
    """Sample mean/covariance within k standard errors: SE(mean_i) = sqrt(Σ_ii/n),
    SE(S_ij) = sqrt((Σ_ii Σ_jj + Σ_ij²)/n) (Gaussian fourth moments)."""
    n = x.shape[0]
    se_mean = (cov.diagonal() / n).sqrt()
    assert bool(((x.mean(0) - mean).abs() < k * se_mean).all()), (x.mean(0), mean, se_mean)
    se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / n).sqrt()
    assert bool(((torch.cov(x.T) - cov).abs() < k * se_cov).all()), (torch.cov(x.T), cov, se_cov)


# ---------------------------------------------------------------------------------------- schedules
def test_posterior_tables_follow_from_bayes_rule():
    s = DiscreteSchedule(cosine_betas(50))
    t = torch.arange(1, 50)  # steps t = 2..50 (index 1..49)
    a_t, ab_prev, beta = s.alphas[t], s.alphas_cumprod_prev[t], s.betas[t]
    precision = 1 / (1 - ab_prev) + a_t / beta  # q(x_{t-1}|x_0) q(x_t|x_{t-1}) in x_{t-1}
    assert torch.allclose(s.posterior_variance[t], 1 / precision)
    assert torch.allclose(s.posterior_mean_coef_x0[t], ab_prev.sqrt() / (1 - ab_prev) / precision)
    assert torch.allclose(s.posterior_mean_coef_xt[t], a_t.sqrt() / beta / precision)
    assert torch.allclose(s.alphas_cumprod, torch.cumprod(1 - s.betas, 0))


def test_named_schedules():
    assert torch.allclose(make_betas("linear", 1000), torch.linspace(1e-4, 0.02, 1000, dtype=DT))
    b = cosine_betas(1000)
    assert float(b.max()) == 0.999 and bool((b > 0).all())
    # ᾱ of the cosine schedule is f(t)/f(0) before clipping
    ab = DiscreteSchedule(b).alphas_cumprod[499]
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert abs(float(ab) - f(0.5) / f(0.0)) < 1e-12


def test_continuous_interpolation_and_lambda_inverse():
    s = DiscreteSchedule(linear_betas(100))
    t = torch.rand(50, dtype=DT) * 0.999 + 0.001
    assert torch.allclose(s.inverse_lambda(s.marginal_lambda(t)), t, atol=1e-10)
    grid = torch.arange(1, 101, dtype=DT) / 100
    assert torch.allclose(s.marginal_alpha(grid) ** 2, s.alphas_cumprod)
    assert torch.allclose(s.time_to_index(grid), torch.arange(100, dtype=DT))
    # d log α / dt = -β(t)/2 inside a segment (the piecewise-linear bridge; the default one is a smooth spline)
    sde = DiscreteVPSDE(s, interpolation="linear")
    h = 1e-6
    tt = torch.tensor([0.4567], dtype=DT)
    slope = (s.marginal_log_mean_coeff(tt + h) - s.marginal_log_mean_coeff(tt - h)) / (2 * h)
    assert torch.allclose(slope, -0.5 * sde.beta(tt))
    assert DiscreteVPSDE(**sde.config()).schedule.num_steps == 100
    assert DiscreteVPSDE(**sde.config()).interpolation == "linear"


def test_uniform_timesteps():
    assert uniform_timesteps(10, 10).tolist() == list(range(10))
    ts = uniform_timesteps(1000, 37)
    assert len(set(ts.tolist())) == 37 and ts[0] == 0 and ts[-1] == 999


# ---------------------------------------------------------------------------------------- samplers
def test_ancestral_sampling_reproduces_gaussian_data():
    s = DiscreteSchedule(linear_betas(1000))  # ᾱ_N = 4e-5: x_N ~ N(0, I) is the right start
    for variance in ("beta", "beta_tilde"):
        x = sample_ancestral(gaussian_eps(s), s, (2000, 2), variance=variance, dtype=DT,
                             generator=torch.Generator().manual_seed(1)).samples
        assert_gaussian_moments(x, MU, SIGMA)


def test_ddim_eta0_is_deterministic_and_reproduces_the_data():
    s = DiscreteSchedule(linear_betas(1000))
    eps = gaussian_eps(s)
    x_T = torch.randn(4000, 2, generator=torch.Generator().manual_seed(2), dtype=DT)
    a = sample_ddim(eps, s, x_T, steps=50, generator=torch.Generator().manual_seed(3))
    b = sample_ddim(eps, s, x_T, steps=50, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.samples, b.samples) and a.nfe == 50
    # DDIM is first order: at 50 steps its covariance is ~7% too small (measured), so the moment check runs
    # with all 1000 steps, where the discretisation bias is well below the Monte Carlo error
    full = sample_ddim(eps, s, x_T, steps=1000).samples
    assert_gaussian_moments(full, MU, SIGMA)


def test_ddim_eta1_on_all_steps_is_ancestral_with_beta_tilde():
    s = DiscreteSchedule(linear_betas(30))
    eps = gaussian_eps(s)
    x_T = torch.randn(5, 2, dtype=DT)
    a = sample_ddim(eps, s, x_T, steps=30, eta=1.0, generator=torch.Generator().manual_seed(7)).samples
    b = sample_ancestral(eps, s, x_T, variance="beta_tilde", generator=torch.Generator().manual_seed(7)).samples
    assert torch.allclose(a, b, atol=1e-10)


def test_ddim_eta_positive_is_stochastic_and_correct():
    s = DiscreteSchedule(linear_betas(1000))
    x = sample_ddim(gaussian_eps(s), s, (4000, 2), steps=100, eta=0.5, dtype=DT,
                    generator=torch.Generator().manual_seed(5)).samples
    assert_gaussian_moments(x, MU, SIGMA)


def test_ddim_inversion_round_trip():
    s = DiscreteSchedule(linear_betas(1000))
    eps = gaussian_eps(s)
    x0 = MU + torch.randn(64, 2, generator=torch.Generator().manual_seed(6), dtype=DT) @ torch.linalg.cholesky(SIGMA).T
    enc = ddim_invert(eps, s, x0, steps=50, fixed_point_iters=6)
    dec = sample_ddim(eps, s, enc.samples, steps=50)
    assert (dec.samples - x0).abs().max() < 1e-4  # measured 2e-7
    assert enc.nfe == 50 * 7
    # the classic explicit inversion (no refinement) is off by about 0.1 here
    classic = sample_ddim(eps, s, ddim_invert(eps, s, x0, steps=50, fixed_point_iters=0).samples, steps=50)
    assert (classic.samples - x0).abs().max() > 1e-2
    timesteps = [0, 10, 50, 100, 200, 400, 600, 800, 999]
    enc = ddim_invert(eps, s, x0, timesteps=timesteps, fixed_point_iters=2)
    assert enc.info["timesteps"].tolist() == timesteps and enc.nfe == 27
    # the encoding of Gaussian data is (close to) standard normal at ᾱ_N ≈ 4e-5
    assert enc.samples.std(0).sub(1).abs().max() < 0.3


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"steps": 0}, ValueError, "steps must be >= 1"),
        ({"steps": 11}, ValueError, "steps must be <= 10"),
        ({"steps": None, "timesteps": [0, 5, 5]}, ValueError, "strictly increasing"),
        ({"steps": None, "timesteps": [0, 12]}, ValueError, r"timesteps must lie in \[0, 9\]"),
        ({"steps": 3, "timesteps": [0, 5]}, ValueError, "give steps or timesteps, not both"),
        ({"eta": -1.0}, ValueError, "eta must be >= 0"),
        ({"clip_x0": (1.0, -1.0)}, ValueError, "clip_x0 must be None or"),
    ],
)
def test_ddim_errors(kwargs, error, match):
    s = DiscreteSchedule(linear_betas(10))
    with pytest.raises(error, match=match):
        sample_ddim(lambda x, i: torch.zeros_like(x), s, (2, 2), **kwargs)


def test_sampler_entry_errors():
    s = DiscreteSchedule(linear_betas(10))
    with pytest.raises(TypeError, match="schedule must be a probgen.sde.discrete.DiscreteSchedule"):
        sample_ddim(lambda x, i: x, "linear", (2, 2))
    with pytest.raises(ValueError, match="unknown variance 'big'; valid choices: 'beta', 'beta_tilde'"):
        sample_ancestral(lambda x, i: x, s, (2, 2), variance="big")
    with pytest.raises(ValueError, match=r"eps_fn returned shape \(2, 1\); expected \(2, 2\)"):
        sample_ddim(lambda x, i: x[:, :1], s, (2, 2), steps=2)
    with pytest.raises(ValueError, match=r"betas must lie in \(0, 1\)"):
        DiscreteSchedule(torch.tensor([0.1, 1.0]))


def test_sigma_space_ancestral_step_is_hos_posterior_exactly():
    """One η = 1 step of sample_euler_ancestral in σ-space, mapped back (x = α x̃), equals Ho et al.'s
    x_{t-1} = μ̃_t(x_t, x̂_0) + sqrt(β̃_t) z (eqs. 6-7) with the same z, for any x̂_0: the VP chain in σ-space
    is a Brownian motion in σ̃², whose bridge is the DDPM posterior."""
    from probgen.samplers import Denoiser, sample_euler_ancestral

    s = DiscreteSchedule(cosine_betas(50))
    x0_hat = lambda x, sigma: 0.3 * x + torch.tensor([0.5, -1.0], dtype=DT)  # noqa: E731  (any denoiser)
    d = Denoiser(x0_hat, sigma_min=1e-3, sigma_max=1e3)
    x_t = torch.randn(6, 2, generator=torch.Generator().manual_seed(3), dtype=DT)
    for i in (1, 17, 48):  # network index i = step t = i + 1 -> step t - 1
        a_t, a_prev = s.alphas_cumprod[i], s.alphas_cumprod_prev[i]
        sig_t, sig_prev = ((1 - a_t) / a_t).sqrt(), ((1 - a_prev) / a_prev).sqrt()
        out = sample_euler_ancestral(d, x_t / a_t.sqrt(), torch.stack([sig_t, sig_prev]),
                                     generator=torch.Generator().manual_seed(i)) * a_prev.sqrt()
        z = torch.randn(6, 2, generator=torch.Generator().manual_seed(i), dtype=DT)
        x0 = x0_hat(x_t / a_t.sqrt(), None)
        expected = s.posterior_mean_coef_x0[i] * x0 + s.posterior_mean_coef_xt[i] * x_t + s.posterior_variance[i].sqrt() * z
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
