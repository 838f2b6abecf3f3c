"""Samplers against a closed-form target: Gaussian data N(mu, Sigma) in D = 2 with correlated Sigma.

For Gaussian data every marginal of the forward SDE is Gaussian,
``p_t = N(alpha_t mu, alpha_t^2 Sigma + sigma_t^2 I)``, so the exact score is available in closed form
and the samplers can be checked against the known answer. Each sampler starts from a draw of the exact
``p_T`` (``x_init``), so the only errors left are the sampler's own (discretisation, corrector bias),
not the prior mismatch ``p_T != N(0, prior_std^2 I)`` (which for VE, sigma_max = 50, would shift the
mean by about ``mu / 50``).

Tolerances: 3 standard errors of the estimator, SE(mean_i) = sqrt(Sigma_ii / n) and, from normal theory
(Wishart), SE(cov_ij) = sqrt((Sigma_ii Sigma_jj + Sigma_ij^2) / n).
"""

from __future__ import annotations

import math

import pytest
import torch

from probgen.samplers import (
    SampleResult,
    annealed_langevin,
    geometric_sigmas,
    langevin,
    sample_ode,
    sample_pc,
    sample_sde,
)
from probgen.sde import SubVPSDE, VESDE, VPSDE

MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
SIGMA = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64)
N = 4000
SDES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}


def marginal_moments(sde, t: float):
    """Mean (2,) and covariance (2, 2) of p_t for data N(MU, SIGMA)."""
    tt = torch.tensor([t], dtype=torch.float64)
    a, s = float(sde.marginal_scale(tt)), float(sde.marginal_std(tt))
    return a * MU, a**2 * SIGMA + s**2 * torch.eye(2, dtype=torch.float64)


def gaussian_score(sde):
    """Exact score of p_t: -(alpha mu - x) C_t^{-1}; per-row times are supported."""

    def score(x, t):
        a = sde.marginal_scale(t).to(x.dtype)
        s = sde.marginal_std(t).to(x.dtype)
        if bool((t == t[0]).all()):  # one time for the batch: a single 2x2 solve
            cov = a[0] ** 2 * SIGMA.to(x.dtype) + s[0] ** 2 * torch.eye(2, dtype=x.dtype)
            return -(x - a[0] * MU.to(x.dtype)) @ torch.linalg.inv(cov)
        cov = a[:, None, None] ** 2 * SIGMA.to(x.dtype) + s[:, None, None] ** 2 * torch.eye(2, dtype=x.dtype)
        resid = (x - a[:, None] * MU.to(x.dtype)).unsqueeze(-1)
        return -torch.linalg.solve(cov, resid).squeeze(-1)

    return score


def exact_prior_draw(sde, n: int, seed: int) -> torch.Tensor:
    mean, cov = marginal_moments(sde, sde.T)
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return mean + z @ torch.linalg.cholesky(cov).T


def assert_moments(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, *, num_se: float = 3.0, slack=0.0):
    """Sample mean and covariance within ``num_se`` standard errors (plus an optional bias allowance)."""
    n = x.shape[0]
    se_mean = (cov.diagonal() / n).sqrt()
    se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / n).sqrt()
    z_mean = (x.mean(0) - mean).abs()
    z_cov = (torch.cov(x.T) - cov).abs()
    assert bool((z_mean <= num_se * se_mean + slack).all()), f"mean {x.mean(0).tolist()} vs {mean.tolist()}"
    assert bool((z_cov <= num_se * se_cov + slack).all()), f"cov {torch.cov(x.T).tolist()} vs {cov.tolist()}"


# ----------------------------------------------------------------------------- reverse SDE (torchsde)
@pytest.mark.parametrize("name", sorted(SDES))
def test_sample_sde_recovers_gaussian(name):
    sde = SDES[name]()
    eps = 1e-3
    out = sample_sde(gaussian_score(sde), sde, (N, 2), steps=500, eps=eps, x_init=exact_prior_draw(sde, N, 1),
                     generator=torch.Generator().manual_seed(2))
    assert isinstance(out, SampleResult)
    assert out.nfe == 500 + 1 + 1 + 0  # torchsde's contract check + 500 Euler steps + Tweedie denoising
    assert_moments(out.samples, MU, SIGMA)


@pytest.mark.parametrize("method, steps", [("reversible_heun", 200), ("srk", 100)])
def test_sample_sde_other_solvers(method, steps):
    sde = VPSDE()
    out = sample_sde(gaussian_score(sde), sde, (N, 2), steps=steps, method=method,
                     x_init=exact_prior_draw(sde, N, 3), generator=torch.Generator().manual_seed(4))
    assert_moments(out.samples, MU, SIGMA)


def test_sample_sde_reproducible_and_callback():
    sde = VPSDE()
    seen = []
    a = sample_sde(gaussian_score(sde), sde, (16, 2), steps=10, generator=torch.Generator().manual_seed(0),
                   dtype=torch.float64, callback=lambda i, x, t: seen.append((i, t)))
    b = sample_sde(gaussian_score(sde), sde, (16, 2), steps=10, generator=torch.Generator().manual_seed(0),
                   dtype=torch.float64)
    c = sample_sde(gaussian_score(sde), sde, (16, 2), steps=10, generator=torch.Generator().manual_seed(1),
                   dtype=torch.float64)
    assert torch.equal(a.samples, b.samples) and not torch.equal(a.samples, c.samples)
    assert [i for i, _ in seen] == list(range(11))
    assert seen[0][1] == pytest.approx(1.0) and seen[-1][1] == pytest.approx(1e-3)


# ----------------------------------------------------------------------------- probability-flow ODE
@pytest.mark.parametrize("name", sorted(SDES))
def test_sample_ode_is_the_exact_gaussian_transport(name):
    """For Gaussian data all C_t share Sigma's eigenvectors, so the ODE flow map is affine:
    x_eps = m_eps + C_eps^{1/2} C_T^{-1/2} (x_T - m_T). Checked pointwise, then in distribution."""
    sde = SDES[name]()
    eps = 1e-3
    x_T = exact_prior_draw(sde, N, 5)
    out = sample_ode(gaussian_score(sde), sde, (N, 2), eps=eps, rtol=1e-6, atol=1e-6, x_init=x_T)
    m_T, C_T = marginal_moments(sde, sde.T)
    m_e, C_e = marginal_moments(sde, eps)

    def sqrtm(c):
        w, v = torch.linalg.eigh(c)
        return v @ torch.diag(w.sqrt()) @ v.T

    expected = m_e + (x_T - m_T) @ (sqrtm(C_e) @ torch.linalg.inv(sqrtm(C_T))).T
    torch.testing.assert_close(out.samples, expected, atol=2e-4, rtol=0)
    assert 0 < out.nfe < 500
    assert_moments(out.samples, MU, SIGMA)


def test_sample_ode_fixed_step():
    sde = VPSDE()
    out = sample_ode(gaussian_score(sde), sde, (N, 2), method="rk4", steps=50, x_init=exact_prior_draw(sde, N, 6))
    assert out.nfe == 4 * 50
    assert_moments(out.samples, MU, SIGMA)


# ----------------------------------------------------------------------------- predictor-corrector
@pytest.mark.parametrize(
    "name, predictor, corrector",
    [("vp", "reverse_diffusion", "langevin"), ("ve", "reverse_diffusion", "langevin"),
     ("subvp", "euler_maruyama", "none")],
)
def test_sample_pc_recovers_gaussian(name, predictor, corrector):
    sde = SDES[name]()
    out = sample_pc(gaussian_score(sde), sde, (N, 2), steps=500, predictor=predictor, corrector=corrector,
                    x_init=exact_prior_draw(sde, N, 7), generator=torch.Generator().manual_seed(8))
    # 500 predictor steps (+ a corrector move after each) and Tweedie's denoising at eps (denoise=True)
    assert out.nfe == 500 * (2 if corrector == "langevin" else 1) + 1
    assert_moments(out.samples, MU, SIGMA)


# ----------------------------------------------------------------------------- annealed Langevin
def test_annealed_langevin_recovers_noised_gaussian():
    """Song & Ermon (2019) Alg. 1 with the exact score of N(mu, Sigma + sigma^2 I).

    Without denoising the chain targets the last level's law N(mu, Sigma + sigma_L^2 I); the
    unadjusted Langevin step alpha_L leaves a bias of relative size about alpha_L / (4 lambda_min) in
    the covariance (stationary covariance of ULA on a Gaussian), which is added as a slack. With
    denoising (Tweedie) the target covariance is Sigma - (Sigma^{-1} + sigma_L^{-2} I)^{-1}.
    """
    sigmas = geometric_sigmas(5.0, 0.1, 8, dtype=torch.float64)

    def score(x, sigma):
        cov = SIGMA + sigma[0] ** 2 * torch.eye(2, dtype=torch.float64)
        return -(x - MU) @ torch.linalg.inv(cov)

    step_lr = 0.01
    out = annealed_langevin(score, sigmas, (N, 2), steps_per_level=200, step_lr=step_lr, denoise=False,
                            generator=torch.Generator().manual_seed(9))
    assert out.nfe == 8 * 200
    target = SIGMA + 0.01 * torch.eye(2, dtype=torch.float64)
    lam_min = float(torch.linalg.eigvalsh(target)[0])
    bias = step_lr / (4 * lam_min) * float(target.abs().max())
    assert_moments(out.samples, MU, target, slack=bias)

    den = annealed_langevin(score, sigmas, (N, 2), steps_per_level=200, step_lr=step_lr, denoise=True,
                            generator=torch.Generator().manual_seed(9))
    assert den.nfe == 8 * 200 + 1
    tweedie_cov = SIGMA - torch.linalg.inv(torch.linalg.inv(SIGMA) + 100.0 * torch.eye(2, dtype=torch.float64))
    assert_moments(den.samples, MU, tweedie_cov, slack=bias)


# ----------------------------------------------------------------------------- ULA
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_langevin_stationary_law_is_exact_ula_gaussian(temperature):
    """ULA x' = x + h P (mu - x) + sqrt(2 h tau) z on N(mu, Sigma), P = Sigma^{-1}, has the exact
    stationary law N(mu, tau (P - h P^2 / 2)^{-1}) (solve V = A V A + 2 h tau I, A = I - h P)."""
    precision = torch.linalg.inv(SIGMA)
    h = 0.05
    out = langevin(lambda x: -(x - MU) @ precision, torch.zeros(N, 2, dtype=torch.float64), steps=600,
                   step_size=h, temperature=temperature, generator=torch.Generator().manual_seed(10))
    assert out.nfe == 600
    target = temperature * torch.linalg.inv(precision - 0.5 * h * precision @ precision)
    assert_moments(out.samples, MU, target)


# ----------------------------------------------------------------------------- validation
def _score(x, t):
    return -x


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: sample_sde(_score, VPSDE(), (4, 2), method="rk45"), ValueError,
         r"unknown method 'rk45'; valid choices: 'euler', 'milstein'"),
        (lambda: sample_sde(_score, VPSDE(), (4, 2), steps=0), ValueError, r"steps must be >= 1"),
        (lambda: sample_sde(_score, VPSDE(), (4, 2), eps=0.0), ValueError, r"eps must lie in \(0, 1\)"),
        (lambda: sample_pc(_score, VPSDE(), (4, 2), eps=-1e-3), ValueError, r"eps must lie in \(0, 1\)"),
        (lambda: sample_pc(_score, VPSDE(), (4, 2), predictor="ddim"), ValueError,
         r"unknown predictor 'ddim'; valid choices: 'reverse_diffusion', 'euler_maruyama'"),
        (lambda: sample_pc(_score, VPSDE(), (4, 2), corrector="ald"), ValueError, r"unknown corrector 'ald'"),
        (lambda: sample_pc(_score, VPSDE(), (4, 2), snr=0.0), ValueError, r"snr must be > 0"),
        (lambda: sample_ode(_score, VPSDE(), (4, 2), method="rk45"), ValueError,
         r"unknown method 'rk45'; valid choices: 'dopri5'"),
        (lambda: sample_ode(_score, VPSDE(), (4, 2), method="rk4"), ValueError,
         r"steps is required for the fixed-step method 'rk4'"),
        (lambda: sample_ode(_score, VPSDE(), (4, 2), steps=10), ValueError,
         r"steps is only used by fixed-step methods"),
        (lambda: sample_ode(_score, VPSDE(), (4, 2), rtol=0.0), ValueError, r"rtol must be > 0"),
        (lambda: sample_sde(_score, VPSDE(), (4, 0)), ValueError, r"shape must be a tuple \(batch, \*event\)"),
        (lambda: sample_pc(_score, VPSDE(), (4, 2), x_init=torch.zeros(4, 3)), ValueError,
         r"x_init must have shape \(4, 2\)"),
        (lambda: sample_sde(_score, "vp", (4, 2)), TypeError, r"sde must be a probgen.sde.SDE"),
        (lambda: sample_pc(lambda x, t: x[:, :1], VPSDE(), (4, 2), steps=2), ValueError,
         r"score_fn returned shape \(4, 1\); expected \(4, 2\)"),
        (lambda: sample_ode(lambda x, t: x[:, :1], VPSDE(), (4, 2)), ValueError,
         r"score_fn returned shape \(4, 1\); expected \(4, 2\)"),
        (lambda: sample_sde(lambda x, t: x[:, :1], VPSDE(), (4, 2), steps=2), ValueError,
         r"score_fn returned shape \(4, 1\); expected \(4, 2\)"),
        (lambda: annealed_langevin(_score, torch.tensor([0.1, 1.0]), (4, 2)), ValueError,
         r"sigmas must be positive and strictly decreasing"),
        (lambda: annealed_langevin(_score, torch.tensor([1.0, 0.1]), (4, 2), steps_per_level=0), ValueError,
         r"steps_per_level must be >= 1"),
        (lambda: langevin(lambda x: x, torch.zeros(4, 2), steps=5, step_size=-1.0), ValueError,
         r"step_size must be > 0"),
        (lambda: langevin(lambda x: x[:, :1], torch.zeros(4, 2), steps=5, step_size=0.1), ValueError,
         r"score_fn returned shape \(4, 1\); expected \(4, 2\)"),
        (lambda: sample_sde(_score, VPSDE(), (4, 2), callback=3), TypeError, r"callback must be callable"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_preserved(dtype):
    sde = VPSDE()
    shape = (8, 1, 2)  # event with two dims: flattening/unflattening of events

    def score(x, t):
        assert x.dtype == dtype and t.dtype == dtype
        return -x

    runs = [
        sample_sde(score, sde, shape, steps=5, dtype=dtype),
        sample_pc(score, sde, shape, steps=5, dtype=dtype),
        sample_ode(score, sde, shape, method="euler", steps=5, dtype=dtype),
        sample_ode(score, sde, shape, dtype=dtype),
        annealed_langevin(lambda x, s: -x, torch.tensor([1.0, 0.5], dtype=dtype), shape, steps_per_level=3),
        langevin(lambda x: -x, torch.zeros(shape, dtype=dtype), steps=3, step_size=0.1),
    ]
    for out in runs:
        assert out.samples.dtype == dtype and out.samples.shape == shape
        assert bool(torch.isfinite(out.samples).all())


def test_samplers_do_not_record_graphs():
    """Samples come back detached even when the score has trainable parameters."""
    w = torch.tensor(1.0, requires_grad=True)
    out = sample_pc(lambda x, t: -w * x, VPSDE(), (4, 2), steps=3)
    assert not out.samples.requires_grad
    assert math.isfinite(float(out.samples.sum()))


def test_pc_with_a_vanishing_score_skips_the_corrector_instead_of_returning_nan():
    from probgen.samplers import sample_pc
    from probgen.sde import VPSDE

    res = sample_pc(lambda x, t: torch.zeros_like(x), VPSDE(), (16, 2), steps=20,
                    generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(res.samples).all()
