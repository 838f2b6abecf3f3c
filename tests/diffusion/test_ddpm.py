"""DDPM: closed-form ELBO against the exact Gaussian log-density, the ODE likelihood, losses, IO, errors.

Gaussian data ``N(μ, Σ)`` in 2-D has an analytically optimal noise predictor: with
``x_t ~ N(√ᾱ μ, C)``, ``C = ᾱΣ + (1-ᾱ)I``, ``E[ε | x_t] = √(1-ᾱ) C⁻¹ (x_t - √ᾱ μ)``. With it the DDPM
is the true reverse chain up to the Gaussian reverse-kernel approximation, so ``elbo(x) ≤ log p(x)``
and the probability-flow ODE likelihood is exact.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from probgen.diffusion.ddpm import DDPM, DiscretizedGaussian
from probgen.sde.discrete import DiscreteSchedule, DiscreteVPSDE

DT = torch.float64
MU = torch.tensor([1.0, -0.5], dtype=DT)
SIGMA = torch.tensor([[1.0, 0.6], [0.6, 0.61]], dtype=DT)


def gaussian_eps(schedule: DiscreteSchedule):
    """Optimal ε̂ for N(MU, SIGMA) data; accepts integer or continuous indices (ᾱ by the schedule's interpolation)."""

    sde = DiscreteVPSDE(schedule)  # the DDPM's continuous-time bridge (exact ᾱ at the steps)

    def eps(x, index):
        t = schedule.index_to_time(index).to(x.dtype)
        abar = sde.mean_scale(t) ** 2
        cov = abar[:, None, None] * SIGMA + (1 - abar)[:, None, None] * torch.eye(2, dtype=DT)
        r = x - abar.sqrt()[:, None] * MU
        return (1 - abar).sqrt()[:, None] * torch.linalg.solve(cov, r.unsqueeze(-1)).squeeze(-1)

    return eps


def exact_gamma(schedule: DiscreteSchedule) -> torch.Tensor:
    """Γ_t = E‖E[ε|x_t]‖²/d = (1-ᾱ) tr(C⁻¹)/d for the Gaussian data."""
    ab = schedule.alphas_cumprod
    cov = ab[:, None, None] * SIGMA + (1 - ab)[:, None, None] * torch.eye(2, dtype=DT)
    return (1 - ab) * torch.linalg.inv(cov).diagonal(dim1=1, dim2=2).sum(-1) / 2


def gaussian_ddpm(num_steps=1000, schedule="linear", **kw) -> DDPM:
    return DDPM((2,), num_steps, schedule, eps_net=gaussian_eps(DiscreteSchedule.from_name(schedule, num_steps)), **kw)


@pytest.fixture(scope="module")
def gaussian_data():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 2, generator=g, dtype=DT)
    x = MU + z @ torch.linalg.cholesky(SIGMA).T
    return x[:1000], x[1000:]  # evaluation points, points to fit Γ on


# ---------------------------------------------------------------------------------------- ELBO bounds
def test_elbo_bounds_log_p_for_every_variance_and_analytic_is_tightest(gaussian_data):
    x, x_fit = gaussian_data
    log_p = MultivariateNormal(MU, SIGMA).log_prob(x)
    terms = {}
    for variance in ("beta", "beta_tilde", "analytic"):
        model = gaussian_ddpm(variance=variance)
        if variance == "analytic":
            gamma = model.fit_analytic_variance(x_fit, batch_size=None, generator=torch.Generator().manual_seed(3))
            # Γ̂ is a mean of 1000 draws of (‖ε‖² - ‖ε̂‖²)/2, each of variance < 2: |error| < 5 × sqrt(2/1000) = 0.23
            assert float((gamma - exact_gamma(model.schedule)).abs().max()) < 0.23
        # the same x_t draws for every variance (same seed): the differences below are paired
        prior, t = model.elbo_terms(x, generator=torch.Generator().manual_seed(1))
        terms[variance] = t.sum(1) + prior
        gap = log_p + terms[variance]  # log p - elbo, per point
        se = float(gap.std()) / math.sqrt(len(gap))
        assert float(gap.mean()) > -3 * se, (variance, float(gap.mean()), se)
    # measured gaps (docs/ddpm.md): beta ≈ 0.00, beta_tilde ≈ 0.9 nats, analytic ≈ 0.00 (± 0.03)
    gap_tilde = log_p + terms["beta_tilde"]
    assert 0.5 < float(gap_tilde.mean()) < 1.5
    # Analytic-DPM's variance minimizes each expected KL among isotropic variances: paired differences
    for other in ("beta", "beta_tilde"):
        diff = terms[other] - terms["analytic"]  # (-elbo_other) - (-elbo_analytic) >= 0 in expectation
        se = float(diff.std()) / math.sqrt(len(diff))
        assert float(diff.mean()) > -3 * se, (other, float(diff.mean()), se)
    assert float((terms["beta_tilde"] - terms["analytic"]).mean()) > 0.5


def test_analytic_variance_lies_between_bao_bounds_and_needs_fitting(gaussian_data):
    model = gaussian_ddpm(num_steps=100, variance="analytic")
    with pytest.raises(ValueError, match="fit_analytic_variance"):
        model.elbo(gaussian_data[0][:4])
    model.fit_analytic_variance(gaussian_data[1], num_batches=2, batch_size=128, estimator="residual")
    s = model.schedule
    var = model.reverse_variances()
    upper = s.posterior_variance + s.alphas_cumprod_prev * s.betas**2 / (s.one_minus_alphas_cumprod * s.alphas_cumprod)
    assert bool((var[1:] >= s.posterior_variance[1:] - 1e-15).all()) and bool((var <= upper + 1e-15).all())
    assert torch.equal(model.state_dict()["analytic_gamma"], model.analytic_gamma)


def test_elbo_terms_match_the_closed_form_kl_of_two_gaussians():
    # a predictor that is off by a constant: the KL term has the closed form of two shifted Gaussians
    model = DDPM((2,), 10, eps_net=lambda x, i: torch.zeros_like(x) + 0.3, variance="beta")
    x0 = torch.tensor([[0.2, -0.1]], dtype=DT)
    noise = torch.tensor([[0.5, 1.0]], dtype=DT)
    i = torch.tensor([4])
    got = model._terms(x0, i, noise, model.eps_net, model.reverse_variances())
    s = model.schedule
    beta, post, ab, abp = s.betas[4], s.posterior_variance[4], s.alphas_cumprod[4], s.alphas_cumprod_prev[4]
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    mu_q = abp.sqrt() * beta / (1 - ab) * x0 + (1 - beta).sqrt() * (1 - abp) / (1 - ab) * xt
    mu_p = (xt - beta / (1 - ab).sqrt() * 0.3) / (1 - beta).sqrt()
    want = 0.5 * (torch.log(beta / post) + (post + (mu_q - mu_p) ** 2) / beta - 1).sum()
    assert torch.allclose(got, want.reshape(1), atol=1e-12)
    assert torch.allclose(model.prior_kl(x0), 0.5 * (s.alphas_cumprod[-1] * x0**2 - s.alphas_cumprod[-1]
                                                     - torch.log1p(-s.alphas_cumprod[-1])).sum().reshape(1))


# ---------------------------------------------------------------------------------------- forward process
def test_q_sample_matches_iterating_the_forward_chain():
    model = DDPM((2,), 30, net_options={"hidden": [8]})
    x0 = torch.tensor([[1.5, -2.0]], dtype=DT).expand(20000, 2)
    g = torch.Generator().manual_seed(5)
    z = x0
    for beta in model.schedule.betas:
        z = (1 - beta).sqrt() * z + beta.sqrt() * torch.randn(z.shape, generator=g, dtype=DT)
    ab = model.schedule.alphas_cumprod[-1]
    closed = model.q_sample(x0[:1], torch.tensor([29]), torch.zeros(1, 2, dtype=DT))
    n = z.shape[0]
    # mean: SE = sqrt(var/n); variance: SE = var sqrt(2/(n-1)); 4 SE each (4 checks)
    assert torch.allclose(z.mean(0), closed[0], atol=4 * math.sqrt(float(1 - ab) / n))
    assert torch.allclose(z.var(0), (1 - ab).expand(2), atol=4 * float(1 - ab) * math.sqrt(2 / (n - 1)))


# ---------------------------------------------------------------------------------------- likelihood
def test_log_prob_is_the_exact_gaussian_density_through_the_ode(gaussian_data):
    x = gaussian_data[0][:8]
    true = MultivariateNormal(MU, SIGMA).log_prob(x)
    for schedule in ("cosine", "linear"):
        model = gaussian_ddpm(schedule=schedule)
        s = model.schedule
        a1 = s.alphas_cumprod[-1]

        def exact_prior(z):  # the marginal at t = 1 is N(√ᾱ_N μ, ᾱ_N Σ + (1 - ᾱ_N) I), not exactly N(0, I)
            return MultivariateNormal(a1.sqrt() * MU, a1 * SIGMA + (1 - a1) * torch.eye(2, dtype=DT)).log_prob(z)

        lp = model.log_prob(x, prior_log_prob=exact_prior)
        # measured 1.6e-3 .. 2.3e-3 at rtol = atol = 1e-5 (β(t) is piecewise constant: the solver error
        # dominates, and shrinks with the tolerance: 6e-4 .. 9e-4 at 1e-6)
        assert torch.allclose(lp, true, atol=5e-3), (schedule, (lp - true).abs().max())
    # with the N(0, I) prior the mismatch at t = 1 (ᾱ_N = 4e-5) costs about a hundredth of a nat
    assert torch.allclose(model.log_prob(x), true, atol=0.05)


def test_matched_sde_is_vpsde_01_20_for_the_linear_schedule():
    from probgen.sde import VPSDE

    t = torch.linspace(0, 1, 201, dtype=DT)
    sde = DDPM((2,), net_options={"hidden": [8]}).sde
    assert torch.allclose(sde.marginal_scale(t), VPSDE(0.1, 20.0).marginal_scale(t), atol=1.1e-3)
    # exact at the steps: α(i/N)² = ᾱ_i
    s = sde.schedule
    assert torch.allclose(sde.marginal_scale(torch.arange(1, 1001, dtype=DT) / 1000) ** 2, s.alphas_cumprod)


# ---------------------------------------------------------------------------------------- decoder, bpd
def test_discretized_gaussian_masses_sum_to_one_and_edges_are_open():
    d = DiscretizedGaussian(torch.tensor([[0.3]], dtype=DT), 0.4, num_levels=5, data_range=(-1.0, 1.0), event_dim=1)
    levels = torch.linspace(-1, 1, 5, dtype=DT).reshape(5, 1, 1)
    mass = torch.stack([d.log_prob(v).exp() for v in levels])
    assert abs(float(mass.sum()) - 1.0) < 1e-12
    normal = torch.distributions.Normal(torch.tensor(0.3, dtype=DT), 0.4)
    assert abs(float(mass[0]) - float(normal.cdf(torch.tensor(-0.75, dtype=DT)))) < 1e-12


def test_bits_per_dim_elbo_is_elbo_over_d_log2():
    model = gaussian_ddpm(num_steps=20, data_levels=9)
    x = torch.round((torch.rand(4, 2, dtype=DT) * 2 - 1) * 4) / 4
    bpd = model.bits_per_dim(x, generator=torch.Generator().manual_seed(0))
    elbo = model.elbo(x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(bpd, -elbo / (2 * math.log(2)))
    # a discrete bound: P(x) <= 1, so bpd >= 0
    assert bool((bpd >= 0).all())
    with pytest.raises(ValueError, match="data_levels"):
        gaussian_ddpm(num_steps=20).bits_per_dim(x, num_levels=9)


# ---------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("loss_type", ["simple", "vlb", "hybrid"])
def test_losses_are_finite_and_reach_the_network(loss_type):
    torch.manual_seed(0)
    model = DDPM((2,), 50, loss_type=loss_type, net_options={"hidden": [16], "zero_init_last": False})
    loss = model.loss(torch.randn(32, 2))
    loss.backward()
    assert loss.dim() == 0 and math.isfinite(loss.detach().item())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.parameters())


def test_simple_loss_of_the_optimal_predictor_is_one_minus_mean_gamma(gaussian_data):
    # E‖ε - E[ε|x_t]‖²/d = 1 - Γ_t, averaged over t ~ U{1..N}
    model = gaussian_ddpm(num_steps=100)
    torch.manual_seed(0)
    x = gaussian_data[0].repeat(20, 1)
    loss = model.loss(x)
    want = float(1 - exact_gamma(model.schedule).mean())
    # per-point squared error has sd < 1.5 (χ²-like with mean < 1), 20000 points -> SE < 0.011
    assert abs(float(loss) - want) < 4 * 1.5 / math.sqrt(len(x))


def test_ema_and_fit_step():
    model = DDPM((2,), 10, ema_decay=0.9, net_options={"hidden": [8], "zero_init_last": False})
    with torch.no_grad():
        for p in model.eps_net.parameters():
            p.add_(1.0)
    model.on_fit_step(0)
    assert int(model.ema_updates) == 1
    x = torch.randn(3, 2)
    i = torch.zeros(3, dtype=torch.long)
    assert not torch.allclose(model.eps(x, i, use_ema=True), model.eps(x, i, use_ema=False))


# ---------------------------------------------------------------------------------------- sampling API
@pytest.mark.parametrize("method,steps,nfe", [("ancestral", None, 20), ("ddim", 5, 5), ("dpm-solver", 6, 6)])
def test_sample_methods_shapes_and_nfe(method, steps, nfe):
    model = DDPM((1, 8, 8), 20, net_options={"base_channels": 8, "embed_dim": 16})
    x, count = model.sample(2, method=method, steps=steps, return_nfe=True, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 8, 8) and count == nfe and bool(torch.isfinite(x).all())


def test_as_distribution_in_a_pyro_program():
    import pyro

    model = gaussian_ddpm(num_steps=1000)
    x = torch.tensor([[1.0, -0.5]], dtype=DT)
    d = model.as_distribution(method="ddim", steps=5)
    tr = pyro.poutine.trace(lambda: pyro.sample("x", d, obs=x)).get_trace()
    lp = tr.nodes["x"]["fn"].log_prob(x)
    assert abs(float(lp[0]) - float(MultivariateNormal(MU, SIGMA).log_prob(x)[0])) < 0.05


# ---------------------------------------------------------------------------------------- config / errors
def test_config_round_trip_is_json_and_custom_nets_are_refused():
    model = DDPM((2,), 30, "cosine", variance="beta", data_levels=17, net_options={"hidden": [8]})
    cfg = json.loads(json.dumps(model.config()))
    clone = DDPM(**cfg)
    clone.load_state_dict(model.state_dict())
    x = torch.randn(3, 2)
    i = torch.arange(3)
    assert torch.equal(clone.eps(x, i), model.eps(x, i))
    assert DDPM.family == "ddpm"
    custom = DDPM((2,), 30, torch.full((30,), 0.01).tolist(), net_options={"hidden": [8]}).config()
    assert len(custom["schedule"]) == 30
    with pytest.raises(ValueError, match="custom eps_net"):
        gaussian_ddpm(num_steps=10).config()


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"schedule": "quadratic"}, ValueError, "unknown schedule 'quadratic'; valid choices: 'linear', 'cosine'"),
        ({"schedule": torch.full((10,), 1.5)}, ValueError, r"betas must lie in \(0, 1\)"),
        ({"schedule": torch.zeros(10)}, ValueError, r"betas must lie in \(0, 1\)"),
        ({"schedule": torch.full((7,), 0.1)}, ValueError, "num_steps = 10 betas, got 7"),
        ({"variance": "large"}, ValueError, "unknown variance 'large'; valid choices: 'beta', 'beta_tilde', 'analytic'"),
        ({"loss_type": "l1"}, ValueError, "unknown loss_type 'l1'"),
        ({"num_steps": 0}, ValueError, "num_steps must be >= 1"),
        ({"data_levels": 1}, ValueError, "data_levels must be >= 2"),
        ({"data_range": (1.0, -1.0)}, ValueError, "data_range must be"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    args = {"event_shape": (2,), "num_steps": 10, "net_options": {"hidden": [8]}, **kwargs}
    with pytest.raises(error, match=match):
        DDPM(**args)


def test_call_errors():
    model = DDPM((2,), 10, net_options={"hidden": [8]})
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2\), got \(4, 3\)"):
        model.loss(torch.randn(4, 3))
    with pytest.raises(ValueError, match="unknown method 'nope'; valid choices: 'ancestral', 'ddim', 'dpm-solver', 'euler', 'heun'"):
        model.sample(2, method="nope")
    with pytest.raises(ValueError, match="steps must be <= 10"):
        model.sample(2, method="ddim", steps=11)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        model.sample(2, method="dpm-solver", steps=0)
    with pytest.raises(ValueError, match="runs all num_steps"):
        model.sample(2, method="ancestral", steps=5)
    with pytest.raises(ValueError, match="eta applies to method='ddim'"):
        model.sample(2, method="ancestral", eta=0.5)
    with pytest.raises(ValueError, match="unknown estimator"):
        model.fit_analytic_variance(torch.randn(4, 2), estimator="exact")
    bad = DDPM((2,), 10, eps_net=lambda x, i: x[:, :1])
    with pytest.raises(ValueError, match=r"eps_net returned shape \(4, 1\); expected \(4, 2\)"):
        bad.loss(torch.randn(4, 2))


# ---------------------------------------------------------------------------------------- smooth VP bridge
def test_ode_likelihood_converges_with_the_tolerance_on_a_gaussian_mixture():
    """Issue 15: with the exact ε of a 2-component mixture the ODE error falls below 1e-5 nats at rtol 1e-8.

    The piecewise-constant β(t) of the old bridge (1000 jumps) left a floor: 7e-3 nats at rtol 1e-5,
    8.7e-3 at 1e-6, 2.2e-3 at 1e-8 (23,000 evaluations); the C² spline bridge measures 3e-4 at 1e-6 and
    1.1e-6 at 1e-8 (about 300 evaluations).
    """
    w, mu, sd = (torch.tensor(v, dtype=DT) for v in ([0.4, 0.6], [-1.0, 1.5], [0.3, 0.5]))
    model = DDPM((1,), 1000, "linear", eps_net=lambda x, i: x)
    sde = model.sde

    def components(x, t):
        a, s = sde.mean_scale(t)[:, None], sde.std(t)[:, None]
        var = (a * sd) ** 2 + s**2
        return -0.5 * (x - a * mu) ** 2 / var - 0.5 * torch.log(2 * math.pi * var) + w.log(), a, s, var

    def log_p(x, t):
        return torch.logsumexp(components(x, t)[0], -1)

    def exact_eps(x, index):  # ε = -σ(t) ∇ log p_t(x), t = (index + 1) / N
        comp, a, s, var = components(x, model.schedule.index_to_time(index).to(x.dtype))
        grad = (torch.softmax(comp, -1) * (-(x - a * mu) / var)).sum(-1, keepdim=True)
        return -s * grad

    model.eps_net = exact_eps
    x = torch.linspace(-2, 3, 6, dtype=DT)[:, None]
    eps = 1e-5
    true = log_p(x, torch.full((6,), eps, dtype=DT))
    prior = lambda z: log_p(z, torch.ones(z.shape[0], dtype=DT))  # noqa: E731
    errors = {}
    for tol in (1e-6, 1e-8):
        lp = model.log_prob(x, eps=eps, rtol=tol, atol=tol, prior_log_prob=prior)
        errors[tol] = float((lp - true).abs().max())
    assert errors[1e-8] < 1e-5, errors
    assert errors[1e-8] < errors[1e-6] / 10, errors
