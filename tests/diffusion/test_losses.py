"""Score-matching losses against closed forms (Gaussian data, analytic scores), in float64.

Statistical checks compare a Monte Carlo mean with its exact value within 4 standard errors, the SE
being the sample standard deviation of the per-example terms (``reduction="none"``) over sqrt(N):
a fixed seed makes each check deterministic, and 4 SE keeps a correct implementation well inside
the band while a missing factor (½, T - eps, a wrong weight or density) moves the mean by many SE.
"""

from __future__ import annotations

import math

import pytest
import torch

from probgen.diffusion import dsm_loss, multi_noise_dsm_loss, sample_importance_time, sliced_score_matching_loss
from probgen.sde import VESDE, SubVPSDE, VPSDE

D = 2
MU = torch.tensor([0.5, -1.0], dtype=torch.float64)
S0 = 0.7


def _gaussian_data(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return MU + S0 * torch.randn(n, D, generator=g, dtype=torch.float64)


def _true_score(sde):
    """Score of p_t = N(α μ, (α² s0² + σ²) I) for x0 ~ N(μ, s0² I)."""

    def score(x, t):
        a = sde.marginal_scale(t)[:, None]
        v = a**2 * S0**2 + sde.marginal_std(t)[:, None] ** 2
        return -(x - a * MU) / v

    return score


def _dsm_constant(sde, weighting: str, eps: float, n: int = 200_001) -> float:
    """½ ∫ λ(t) D (1/σ² - 1/v_t) dt: the DSM loss at the true score (its minimum), by quadrature on a log grid."""
    t = torch.logspace(math.log10(eps), 0.0, n, dtype=torch.float64)
    var = sde.marginal_std(t) ** 2
    v = sde.marginal_scale(t) ** 2 * S0**2 + var
    lam = var if weighting == "sigma2" else sde.diffusion(t) ** 2
    return float(torch.trapezoid(0.5 * lam * D * (1 / var - 1 / v), t))


def _mean_se(values: torch.Tensor) -> tuple[float, float]:
    values = values.detach()
    return float(values.mean()), float(values.std() / math.sqrt(values.numel()))


@pytest.mark.parametrize(
    "weighting, importance_sampling, eps",
    [("sigma2", False, 1e-5), ("likelihood", True, 1e-5), ("likelihood", False, 1e-2)],
)
def test_dsm_at_true_score_equals_its_minimum(weighting, importance_sampling, eps):
    sde = VPSDE()
    x = _gaussian_data(40_000, seed=1)
    g = torch.Generator().manual_seed(2)
    per = dsm_loss(_true_score(sde), sde, x, weighting=weighting, importance_sampling=importance_sampling,
                   eps=eps, reduction="none", generator=g)
    assert per.shape == (x.shape[0],)
    mean, se = _mean_se(per)
    exact = _dsm_constant(sde, weighting, eps)
    assert abs(mean - exact) < 4 * se, (mean, exact, se)


def test_importance_sampling_agrees_with_uniform_time():
    # an imperfect score (the prior's): both estimators are unbiased for the same integral
    sde = VPSDE()
    x = _gaussian_data(40_000, seed=3)
    kwargs = dict(weighting="likelihood", eps=1e-2, reduction="none")
    plain = dsm_loss(lambda x, t: -x, sde, x, generator=torch.Generator().manual_seed(4), **kwargs)
    weighted = dsm_loss(lambda x, t: -x, sde, x, importance_sampling=True,
                        generator=torch.Generator().manual_seed(5), **kwargs)
    (m1, se1), (m2, se2) = _mean_se(plain), _mean_se(weighted)
    assert abs(m1 - m2) < 4 * math.hypot(se1, se2), (m1, m2, se1, se2)
    assert se2 < se1  # the point of importance sampling


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE(), VPSDE(beta_min=1.0, beta_max=1.0 + 1e-13)],
                         ids=["vp", "subvp", "ve", "vp-constant-beta"])
def test_importance_time_density_is_the_sampled_one(sde):
    # E_q[f(t)/q(t)] = ∫ f dt for any f: with f(t) = t the answer is (T² - eps²)/2
    eps = 1e-3
    t, q = sample_importance_time(sde, 100_000, eps=eps, generator=torch.Generator().manual_seed(6),
                                  dtype=torch.float64)
    assert t.dtype == torch.float64 and bool((t >= eps).all()) and bool((t <= sde.T).all())
    mean, se = _mean_se(t / q)
    assert abs(mean - 0.5 * (1 - eps**2)) < 4 * se, (mean, se)
    # and q is proportional to g²/σ² (up to the piecewise-constant grid for non-VP SDEs)
    ratio = (sde.diffusion(t) ** 2 / sde.marginal_std(t) ** 2) / q
    assert float(ratio.std() / ratio.mean()) < 1e-2


def test_vp_closed_form_matches_numeric_grid():
    from probgen.diffusion.losses import _grid_importance_time, _vp_importance_time

    sde = VPSDE()
    u = torch.linspace(0.001, 0.999, 200, dtype=torch.float64)
    t1, q1 = _vp_importance_time(sde, u, 1e-5)
    t2, q2 = _grid_importance_time(sde, u, 1e-5)
    torch.testing.assert_close(t1, t2, rtol=1e-3, atol=1e-7)
    torch.testing.assert_close(q1, q2, rtol=1e-2, atol=0.0)


def test_multi_noise_dsm_at_true_score_equals_its_minimum():
    sigmas = torch.tensor([2.0, 1.0, 0.5, 0.1], dtype=torch.float64)
    x = _gaussian_data(40_000, seed=7)

    def score(x_noisy, sigma):  # p_σ = N(μ, (s0² + σ²) I)
        return -(x_noisy - MU) / (S0**2 + sigma[:, None] ** 2)

    for weighting, lam in (("sigma2", sigmas**2), ("none", torch.ones_like(sigmas))):
        per = multi_noise_dsm_loss(score, x, sigmas, weighting=weighting, reduction="none",
                                   generator=torch.Generator().manual_seed(8))
        exact = float((0.5 * lam * D * (1 / sigmas**2 - 1 / (S0**2 + sigmas**2))).mean())
        mean, se = _mean_se(per)
        assert abs(mean - exact) < 4 * se, (weighting, mean, exact, se)


def _exact_score_matching(score_fn, x):
    """Hyvärinen's objective per example: tr ∇s + ½|s|², the trace by autograd (full Jacobian)."""
    jac = torch.func.vmap(torch.func.jacrev(lambda xi: score_fn(xi[None])[0]))(x)
    return torch.diagonal(jac, dim1=-2, dim2=-1).sum(-1) + 0.5 * (score_fn(x) ** 2).sum(-1)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
@pytest.mark.parametrize("variance_reduction", [True, False])
def test_sliced_score_matching_equals_exact_in_expectation(noise, variance_reduction):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    x = torch.randn(64, 3, dtype=torch.float64)
    exact = float(_exact_score_matching(net, x).mean().detach())
    reps = 500  # projections are the only randomness: x is fixed and repeated
    per = sliced_score_matching_loss(net, x.repeat(reps, 1), noise=noise, variance_reduction=variance_reduction,
                                     reduction="none", generator=torch.Generator().manual_seed(9))
    mean, se = _mean_se(per)
    assert abs(mean - exact) < 4 * se, (mean, exact, se)


def test_sliced_score_matching_projections_average_and_gradients():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    x = torch.randn(10, 2, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    per = sliced_score_matching_loss(net, x, num_projections=4, reduction="none", generator=g)
    assert per.shape == (10,)
    loss = sliced_score_matching_loss(net, x, num_projections=4)
    loss.backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in net.parameters())
    # a linear score -A x with Rademacher projections and VR: v'(-A)v = -tr A exactly when A is diagonal
    A = torch.diag(torch.tensor([2.0, 3.0], dtype=torch.float64))
    per = sliced_score_matching_loss(lambda y: -y @ A, x, num_projections=3, noise="rademacher", reduction="none")
    torch.testing.assert_close(per, -5.0 + 0.5 * ((x @ A) ** 2).sum(-1))


def test_reductions_agree():
    sde = VPSDE()
    x = _gaussian_data(32, seed=10)
    score = _true_score(sde)
    per = dsm_loss(score, sde, x, reduction="none", generator=torch.Generator().manual_seed(0))
    mean = dsm_loss(score, sde, x, reduction="mean", generator=torch.Generator().manual_seed(0))
    total = dsm_loss(score, sde, x, reduction="sum", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(per.mean(), mean)
    torch.testing.assert_close(per.sum(), total)


def test_callable_weighting_matches_named_one():
    sde = VPSDE()
    x = _gaussian_data(32, seed=11)
    score = _true_score(sde)
    named = dsm_loss(score, sde, x, weighting="likelihood", generator=torch.Generator().manual_seed(0))
    func = dsm_loss(score, sde, x, weighting=lambda t: sde.diffusion(t) ** 2,
                    generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(named, func)


def test_bad_arguments():
    sde = VPSDE()
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="unknown weighting 'l2'; valid choices: 'sigma2', 'likelihood'"):
        dsm_loss(lambda x, t: -x, sde, x, weighting="l2")
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        dsm_loss(lambda x, t: -x, sde, x, reduction="avg")
    with pytest.raises(ValueError, match="importance_sampling=True is for weighting='likelihood'"):
        dsm_loss(lambda x, t: -x, sde, x, importance_sampling=True)
    with pytest.raises(ValueError, match="eps must be < sde.T"):
        dsm_loss(lambda x, t: -x, sde, x, eps=1.0)
    with pytest.raises(ValueError, match=r"score_fn returned shape \(4, 3\); expected \(4, 2\)"):
        dsm_loss(lambda x, t: torch.zeros(4, 3), sde, x)
    with pytest.raises(ValueError, match=r"weighting\(t\) must return a tensor of shape \(4,\)"):
        dsm_loss(lambda x, t: -x, sde, x, weighting=lambda t: 1.0)
    with pytest.raises(TypeError, match="score_fn must be callable"):
        dsm_loss(None, sde, x)
    with pytest.raises(ValueError, match="sigmas must be finite and > 0"):
        multi_noise_dsm_loss(lambda x, s: -x, x, [1.0, 0.0])
    with pytest.raises(ValueError, match="unknown weighting 'sigma'; valid choices: 'sigma2', 'none'"):
        multi_noise_dsm_loss(lambda x, s: -x, x, [1.0], weighting="sigma")
    with pytest.raises(ValueError, match="unknown noise 'uniform'; valid choices: 'rademacher', 'gaussian'"):
        sliced_score_matching_loss(lambda x: -x, x, noise="uniform")
    with pytest.raises(ValueError, match="num_projections must be >= 1"):
        sliced_score_matching_loss(lambda x: -x, x, num_projections=0)
