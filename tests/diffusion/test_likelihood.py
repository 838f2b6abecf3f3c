"""Tests of probgen.diffusion.likelihood.ode_log_prob against closed-form Gaussian densities.

For data N(mu, Sigma) every marginal of the forward SDE is Gaussian,
``p_t = N(alpha_t mu, alpha_t^2 Sigma + sigma_t^2 I)``, and its score is exact, so the
probability-flow ODE must return ``log p_eps(x)`` up to the solver's error. We compare with the density
of ``p_eps`` itself (not ``p_0``; for eps = 1e-5 the two differ by less than 1e-4 nats here, which a
test below also checks), and pass the exact ``p_T`` as ``prior_log_prob`` so that the prior mismatch
``p_T != N(0, prior_std^2 I)`` (about ``|mu| alpha_T`` or ``|mu| / sigma_max`` nats, i.e. 1e-2) does not
hide solver errors. The default prior is tested where it is exact (VP with N(0, I) data).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from probgen.data.quantize import bits_per_dim as data_bits_per_dim
from probgen.diffusion.likelihood import bits_per_dim, ode_log_prob
from probgen.sde import SubVPSDE, VESDE, VPSDE

MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
SIGMA = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64)
SDES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}
POINTS = torch.tensor(
    [[1.0, -0.5], [0.0, 0.0], [2.5, 1.0], [-1.0, -2.0], [3.0, -3.0], [1.2, -0.4]], dtype=torch.float64
)


def marginal_dist(sde, t: float, dtype=torch.float64) -> torch.distributions.MultivariateNormal:
    tt = torch.tensor([t], dtype=torch.float64)
    a, s = float(sde.marginal_scale(tt)), float(sde.marginal_std(tt))
    cov = a**2 * SIGMA + s**2 * torch.eye(2, dtype=torch.float64)
    return torch.distributions.MultivariateNormal((a * MU).to(dtype), cov.to(dtype))


def gaussian_score(sde):
    def score(x, t):
        a = sde.marginal_scale(t).to(x.dtype)
        s = sde.marginal_std(t).to(x.dtype)
        cov = a[:, None, None] ** 2 * SIGMA.to(x.dtype) + s[:, None, None] ** 2 * torch.eye(2, dtype=x.dtype)
        resid = (x - a[:, None] * MU.to(x.dtype)).unsqueeze(-1)
        return -torch.linalg.solve(cov, resid).squeeze(-1)

    return score


def exact_prior(sde):
    return marginal_dist(sde, sde.T).log_prob


@pytest.mark.parametrize("name", sorted(SDES))
def test_exact_gaussian_log_density(name):
    sde = SDES[name]()
    eps = 1e-5
    lp, nfe = ode_log_prob(gaussian_score(sde), sde, POINTS, eps=eps, rtol=1e-6, atol=1e-6,
                           prior_log_prob=exact_prior(sde), return_nfe=True)
    expected = marginal_dist(sde, eps).log_prob(POINTS)
    assert lp.shape == (6,) and lp.dtype == torch.float64
    torch.testing.assert_close(lp, expected, atol=1e-3, rtol=0)
    assert isinstance(nfe, int) and nfe > 0
    # p_eps vs p_0 (the data law itself): for VP / sub-VP (sigma_eps^2 ~ beta_min eps = 1e-6) the gap is
    # below the tolerance, so there the result is also log p_0 to 1e-3. For VE, sigma_eps ~ sigma_min = 0.01
    # perturbs the data by N(0, 1e-4 I): the gap reaches ~6e-3 nats at the tail point (3, -3), so there
    # ode_log_prob is log p_eps, not log p_0.
    p0 = torch.distributions.MultivariateNormal(MU, SIGMA).log_prob(POINTS)
    gap = float((expected - p0).abs().max())
    if name == "ve":
        assert 1e-3 < gap < 1e-2
    else:
        assert gap < 1e-4


def test_default_prior_is_exact_for_stationary_vp():
    """N(0, I) data is invariant under VP, so the default prior N(0, I) is the exact p_T."""
    sde = VPSDE()
    x = POINTS
    lp = ode_log_prob(lambda y, t: -y, sde, x, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(lp, torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(noise):
    """Each row draws its own probes, fixed over its solve: 200 replicates of 3 points give 200
    independent single-probe estimates per point; their mean is within 3 SE (SE = sd / sqrt(200)) of
    the exact-trace answer (plus 1e-4 for the solvers' own error)."""
    sde = VPSDE()
    reps = 200
    pts = POINTS[:3]
    x = pts.repeat(reps, 1)
    kw = dict(rtol=1e-6, atol=1e-6, prior_log_prob=exact_prior(sde))
    exact = ode_log_prob(gaussian_score(sde), sde, pts, **kw)
    est = ode_log_prob(gaussian_score(sde), sde, x, trace="hutchinson", noise=noise,
                       generator=torch.Generator().manual_seed(0), **kw).reshape(reps, 3)
    sd = est.std(0)
    assert bool((sd > 1e-3).all())  # a real estimator with spread (Sigma is not diagonal)
    se = sd / math.sqrt(reps)
    assert bool(((est.mean(0) - exact).abs() <= 3 * se + 1e-4).all()), (est.mean(0) - exact, se)


def test_hutchinson_more_probes_reduce_spread():
    sde = VPSDE()
    x = POINTS[:1].repeat(100, 1)
    kw = dict(rtol=1e-5, atol=1e-5, trace="hutchinson", prior_log_prob=exact_prior(sde))
    one = ode_log_prob(gaussian_score(sde), sde, x, generator=torch.Generator().manual_seed(1), **kw)
    many = ode_log_prob(gaussian_score(sde), sde, x, num_probes=8, generator=torch.Generator().manual_seed(1), **kw)
    # variance scales as 1/P: with P = 8 the sd should be far below the single-probe sd
    assert float(many.std()) < 0.6 * float(one.std())


def test_batch_size_chunks_match_whole_batch():
    sde = SubVPSDE()
    kw = dict(method="rk4", steps=20, prior_log_prob=exact_prior(sde))
    whole = ode_log_prob(gaussian_score(sde), sde, POINTS, **kw)
    chunked, nfe = ode_log_prob(gaussian_score(sde), sde, POINTS, batch_size=4, return_nfe=True, **kw)
    torch.testing.assert_close(chunked, whole, atol=1e-12, rtol=0)
    assert nfe == 2 * 4 * 20  # two chunks, rk4 = 4 evaluations per step


def test_gradient_wrt_x_is_the_score():
    """d/dx log p_eps(x) for VP with N(0, I) data is -x: autograd through the solve (exact trace)."""
    sde = VPSDE()
    x = POINTS[:3].clone().requires_grad_(True)
    lp = ode_log_prob(lambda y, t: -y, sde, x, rtol=1e-7, atol=1e-7)
    (grad,) = torch.autograd.grad(lp.sum(), x)
    torch.testing.assert_close(grad, -x.detach(), atol=1e-5, rtol=0)


class _ScaledScore(nn.Module):
    """Score of N(0, c I) data under VP: -x / (alpha^2 c + sigma^2); c is a trainable parameter."""

    def __init__(self, sde, c: float):
        super().__init__()
        self.sde = sde
        self.log_c = nn.Parameter(torch.tensor(math.log(c), dtype=torch.float64))

    def forward(self, x, t):
        a, s = self.sde.marginal_scale(t), self.sde.marginal_std(t)
        return -x / (a**2 * self.log_c.exp() + s**2)[:, None]


def test_adjoint_gradient_matches_direct_and_closed_form():
    sde = VPSDE()
    x = POINTS[:4]
    grads = []
    for adjoint in (False, True):
        score = _ScaledScore(sde, 2.0)
        c = 2.0
        prior = torch.distributions.Normal(0.0, 1.0)

        def prior_log_prob(z, score=score):  # exact p_T = N(0, (alpha_T^2 c + sigma_T^2) I), depends on c
            a = sde.marginal_scale(torch.ones(1, dtype=torch.float64))
            s = sde.marginal_std(torch.ones(1, dtype=torch.float64))
            var = a**2 * score.log_c.exp() + s**2
            return (prior.log_prob(z / var.sqrt()) - 0.5 * var.log()).sum(-1)

        lp = ode_log_prob(score, sde, x, rtol=1e-7, atol=1e-7, adjoint=adjoint, prior_log_prob=prior_log_prob)
        (g,) = torch.autograd.grad(lp.sum(), score.log_c)
        grads.append(g)
    # closed form: log N(x; 0, v I), v = alpha_eps^2 c + sigma_eps^2; d/dlog c = (|x|^2 / v - D) / 2 * dv/dlog c / v
    e = torch.full((1,), 1e-5, dtype=torch.float64)
    a2, s2 = float(sde.marginal_scale(e)) ** 2, float(sde.marginal_std(e)) ** 2
    v = a2 * c + s2
    expected = sum(((float((xi**2).sum()) / v - 2) / 2) * (a2 * c / v) for xi in x)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-4)
    assert float(grads[0]) == pytest.approx(expected, abs=1e-3)


# ----------------------------------------------------------------------------- validation and dtypes
def _score(x, t):
    return -x


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(eps=0.0), ValueError, r"eps must lie in \(0, 1\)"),
        (dict(eps=-1e-5), ValueError, r"eps must lie in \(0, 1\)"),
        (dict(eps=1.0), ValueError, r"eps must lie in \(0, 1\)"),
        (dict(rtol=0.0), ValueError, r"rtol must be > 0"),
        (dict(atol=-1.0), ValueError, r"atol must be > 0"),
        (dict(trace="skilling"), ValueError, r"unknown trace 'skilling'; valid choices: 'exact', 'hutchinson'"),
        (dict(trace="hutchinson", noise="uniform"), ValueError,
         r"unknown noise 'uniform'; valid choices: 'rademacher', 'gaussian'"),
        (dict(method="rk45"), ValueError, r"unknown method 'rk45'; valid choices: 'dopri5', 'dopri8'"),
        (dict(method="euler"), ValueError, r"steps is required for the fixed-step method 'euler'"),
        (dict(num_probes=0), ValueError, r"num_probes must be >= 1"),
        (dict(batch_size=0), ValueError, r"batch_size must be >= 1"),
        (dict(adjoint_params=[]), ValueError, r"adjoint_params is only used with adjoint=True"),
        (dict(prior_log_prob=3), TypeError, r"prior_log_prob must be callable"),
    ],
)
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        ode_log_prob(_score, VPSDE(), torch.zeros(2, 2), **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"x must have at least 2 dimensions"):
        ode_log_prob(_score, VPSDE(), torch.zeros(3))
    with pytest.raises(ValueError, match=r"x contains 1 NaN"):
        ode_log_prob(_score, VPSDE(), torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(TypeError, match=r"x must be float32 or float64"):
        ode_log_prob(_score, VPSDE(), torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"score_fn returned shape \(2, 1\); expected \(2, 2\)"):
        ode_log_prob(lambda x, t: x[:, :1], VPSDE(), torch.zeros(2, 2))
    with pytest.raises(TypeError, match=r"sde must be a probgen.sde.SDE"):
        ode_log_prob(_score, None, torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"prior_log_prob returned shape \(2, 2\); expected \(2,\)"):
        ode_log_prob(_score, VPSDE(), torch.zeros(2, 2), prior_log_prob=lambda z: z)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_dtype_preserved(dtype, trace):
    x = torch.randn(3, 2, 2, dtype=dtype)  # a 2-D event

    def score(y, t):
        assert y.dtype == dtype and t.dtype == dtype
        return -y

    lp = ode_log_prob(score, VPSDE(), x, trace=trace)
    assert lp.dtype == dtype and lp.shape == (3,)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(x.double()).sum((1, 2))
    tol = 1e-3 if trace == "exact" else 1e9  # Hutchinson with -y: vᵀ(-I)v varies; only check dtype/shape
    assert float((lp.double() - expected).abs().max()) < tol


def test_bits_per_dim_is_the_data_helper():
    assert bits_per_dim is data_bits_per_dim
    lp = torch.tensor([-64 * math.log(2.0)])
    assert float(bits_per_dim(lp, 64, num_levels=17)) == pytest.approx(math.log2(17), abs=1e-6)
