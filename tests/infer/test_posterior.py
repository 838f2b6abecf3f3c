"""posterior_sample: the likelihood read from the model, bad input, and closed-form checks on
Gaussian-mixture priors with exact scores (ScoreSDE and DDPM), small sizes."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import probgen as pg
from probgen.diffusion import DDPM, EDM, ScoreSDE, edm_preconditioning
from probgen.flows.matching import FlowMatching
from probgen.infer.posterior import (
    DenseOperator,
    GaussianMixture,
    LinearGaussian,
    MaskOperator,
    posterior_calibration,
    posterior_sample,
)
from probgen.infer.posterior._likelihood import ModelLikelihood
from probgen.sde import VPSDE

F64 = torch.float64


def _mixture(dim: int, seed: int = 0) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(3, dim, generator=g, dtype=F64) * 1.5
    a = torch.randn(3, dim, dim, generator=g, dtype=F64) * 0.3
    covs = a @ a.mT + 0.15 * torch.eye(dim, dtype=F64)
    return GaussianMixture(torch.tensor([0.2, 0.3, 0.5], dtype=F64), means, covs)


def _score_sde(gm: GaussianMixture) -> ScoreSDE:
    sde = VPSDE()
    return ScoreSDE((gm.dim,), sde=sde, net=gm.score_fn(sde), parameterization="score")


def _ddpm(gm: GaussianMixture, num_steps: int = 1000) -> DDPM:
    model = DDPM((gm.dim,), num_steps=num_steps, eps_net=torch.nn.Identity())
    model.eps_net = gm.eps_fn(model.schedule)
    return model


class _EDMNet(torch.nn.Module):
    """The exact preconditioned network of a mixture prior: ``F = (D - c_skip x)/c_out`` at ``σ = e^{4 c_noise}``."""

    def __init__(self, gm: GaussianMixture, sigma_data: float):
        super().__init__()
        self.gm, self.sigma_data = gm, sigma_data

    def forward(self, x_in, c_noise):
        sigma = (4 * c_noise).exp()
        c_skip, c_out, c_in, _ = edm_preconditioning(sigma, self.sigma_data)
        x = x_in / c_in[:, None]
        return (self.gm.denoise(x, torch.ones_like(sigma), sigma) - c_skip[:, None] * x) / c_out[:, None]


def _edm(gm: GaussianMixture) -> EDM:
    return EDM(gm.dim, net=_EDMNet(gm, 0.5), sigma_data=0.5)


def _fm(gm: GaussianMixture) -> FlowMatching:
    model = FlowMatching(gm.dim, net=torch.nn.Identity())
    model.net = gm.velocity_fn(model.path)
    return model


PRIORS = {"score_sde": _score_sde, "ddpm": _ddpm, "edm": _edm, "fm": _fm}


def _model(prior, lik):
    def model(y):
        x = pyro.sample("x", prior.as_distribution())
        pyro.sample("y", lik(x), obs=y)
    return model


# ------------------------------------------------------------------------------------------- closed forms
def test_mixture_score_is_the_gradient_of_its_log_density():
    gm = _mixture(3)
    x = torch.randn(5, 3, dtype=F64, requires_grad=True)
    alpha, sigma = torch.full((5,), 0.7, dtype=F64), torch.full((5,), 0.5, dtype=F64)
    (grad,) = torch.autograd.grad(gm.marginal_log_prob(x, alpha, sigma).sum(), x)
    torch.testing.assert_close(gm.marginal_score(x, alpha, sigma), grad)


def test_mixture_posterior_matches_a_grid():
    gm = _mixture(2)
    a = torch.tensor([[1.0, -0.5]], dtype=F64)
    y = torch.tensor([0.4], dtype=F64)
    post = gm.posterior(a, 0.3, y)
    u = torch.linspace(-7, 7, 401, dtype=F64)
    grid = torch.stack(torch.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    logp = gm.log_prob(grid) + dist.Normal(grid @ a.T, 0.3).to_event(1).log_prob(y)
    w = torch.softmax(logp, 0)
    mean = (w[:, None] * grid).sum(0)
    torch.testing.assert_close(post.mean(), mean, atol=1e-4, rtol=0)
    cov = (w[:, None, None] * (grid - mean)[:, :, None] * (grid - mean)[:, None, :]).sum(0)
    torch.testing.assert_close(post.covariance(), cov, atol=1e-3, rtol=0)
    torch.testing.assert_close(torch.exp(post.log_prob(grid) - logp).std(), torch.zeros((), dtype=F64),
                               atol=1e-8, rtol=0)


def test_exact_networks_give_the_mixture_score():
    gm = _mixture(2)
    x = torch.randn(4, 2, dtype=F64)
    t = torch.full((4,), 0.3, dtype=F64)
    sde_model, ddpm = _score_sde(gm), _ddpm(gm)
    sde = sde_model.sde
    torch.testing.assert_close(sde_model.score(x, t), gm.marginal_score(x, sde.marginal_scale(t), sde.marginal_std(t)))
    s = ddpm.sde
    torch.testing.assert_close(ddpm.score(x, t), gm.marginal_score(x, s.marginal_scale(t), s.marginal_std(t)))


@pytest.mark.parametrize("family", sorted(PRIORS))
def test_every_family_gives_the_exact_denoiser_to_the_samplers(family):
    # the adapter reads model.denoiser() only: in σ-space D(x, σ) = E[x_0 | x_0 + σ z = x] for every family
    from probgen.infer.posterior._prior import DiffusionPrior

    gm = _mixture(2)
    prior = DiffusionPrior(PRIORS[family](gm), dtype=F64, device=torch.device("cpu"))
    x = torch.randn(4, 2, dtype=F64) * 2
    for sigma in (0.05, 0.7, 5.0):
        expected = gm.denoise(x, torch.ones(4, dtype=F64), torch.full((4,), sigma, dtype=F64))
        torch.testing.assert_close(prior.denoise(x, sigma), expected, atol=2e-3 * (1 + sigma), rtol=1e-3)
    assert prior.nfe == 3


# ------------------------------------------------------------------------------------------- likelihood
def test_likelihood_read_from_the_model_equals_the_hand_written_one():
    prior = _score_sde(_mixture(2))

    def model(y, scale):
        x = pyro.sample("x", prior.as_distribution())
        pyro.sample("y", dist.Normal(torch.sin(x[..., 0]) * x[..., 1], scale), obs=y)
        pyro.sample("z", dist.StudentT(3.0, x.sum(-1), 0.5), obs=y + 1)

    y = torch.tensor(0.3, dtype=F64)
    lik = ModelLikelihood(model, (y, 0.2), {}, "x")
    assert lik.linear is None and sorted(lik.observed) == ["y", "z"]
    x = torch.randn(6, 2, dtype=F64, requires_grad=True)
    hand = (dist.Normal(torch.sin(x[:, 0]) * x[:, 1], 0.2).log_prob(y)
            + dist.StudentT(3.0, x.sum(-1), 0.5).log_prob(y + 1))
    torch.testing.assert_close(lik.log_prob(x), hand)
    lp, grad = lik.log_prob_and_grad(x)
    (expected,) = torch.autograd.grad(hand.sum(), x)
    torch.testing.assert_close(grad, expected)


def test_linear_gaussian_site_is_recognised():
    prior = _score_sde(_mixture(2))
    op = DenseOperator(torch.tensor([[1.0, 2.0]], dtype=F64))
    lik = ModelLikelihood(_model(prior, LinearGaussian(op, 0.1)), (torch.tensor([0.5], dtype=F64),), {}, "x")
    assert lik.linear is not None and lik.linear[0] is op and lik.linear[1] == 0.1
    x = torch.randn(5, 2, dtype=F64)
    traced = torch.stack([lik._one(xi) for xi in x])  # the model's own trace, one particle at a time
    torch.testing.assert_close(lik.log_prob(x), traced)
    torch.testing.assert_close(traced, dist.Normal(x @ op.matrix.T, 0.1).to_event(1).log_prob(torch.tensor([0.5], dtype=F64)))


# ------------------------------------------------------------------------------------------- bad input
def test_bad_input_names_the_argument():
    prior = _score_sde(_mixture(2))
    y = torch.tensor([0.5], dtype=F64)

    def not_probgen(y):
        x = pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("y", dist.Normal(x[..., :1], 0.1).to_event(1), obs=y)

    with pytest.raises(TypeError, match="site 'x' must be drawn from a probgen model"):
        posterior_sample(not_probgen, y, site="x", method="smc")
    with pytest.raises(ValueError, match="site 'w' is not a sample site"):
        posterior_sample(_model(prior, LinearGaussian(torch.eye(1, 2, dtype=F64), 0.1)), y, site="w")
    with pytest.raises(ValueError, match=r"observation of site 'y' \(obs=...\) has shape \(2,\)"):
        posterior_sample(_model(prior, LinearGaussian(torch.eye(1, 2, dtype=F64), 0.1)), torch.zeros(2, dtype=F64),
                         site="x")
    with pytest.raises(ValueError, match="observation of site 'y'.*NaN"):
        posterior_sample(_model(prior, LinearGaussian(torch.eye(1, 2, dtype=F64), 0.1)),
                         torch.tensor([math.nan], dtype=F64), site="x")

    def nonlinear(y):
        x = pyro.sample("x", prior.as_distribution())
        pyro.sample("y", dist.Normal(x[..., :1] ** 2, 0.1).to_event(1), obs=y)

    for method in ("ddrm", "pigdm"):
        with pytest.raises(ValueError, match=f"method='{method}' needs a linear-Gaussian observation"):
            posterior_sample(nonlinear, y, site="x", method=method)
    with pytest.raises(ValueError, match="method"):
        posterior_sample(nonlinear, y, site="x", method="magic")
    with pytest.raises(TypeError, match="unknown option"):
        posterior_sample(nonlinear, y, site="x", method="dps", stepz=3)
    with pytest.raises(ValueError, match="num_samples"):
        posterior_sample(nonlinear, y, site="x", num_samples=0)
    with pytest.raises(ValueError, match=r"clip_x0 must be None or \(low, high\)"):
        posterior_sample(nonlinear, y, site="x", method="dps", clip_x0=(1.0, -1.0))
    with pytest.raises(ValueError, match="clip_x0 applies to the diffusion methods"):
        posterior_sample(nonlinear, y, site="x", method="mcmc", clip_x0=(-1.0, 1.0))
    flow = pg.flows.Flow(2, "realnvp", num_layers=2)

    def flow_model(y):
        x = pyro.sample("x", flow.as_distribution())
        pyro.sample("y", dist.Normal(x[..., :1], 0.1).to_event(1), obs=y)

    with pytest.raises(ValueError, match="needs a diffusion-type prior"):
        posterior_sample(flow_model, y.float(), site="x", method="dps")


# ------------------------------------------------------------------------------------------- methods
@pytest.mark.parametrize("method", ["dps", "pigdm", "ddrm", "annealed-langevin", "smc"])
@pytest.mark.parametrize("family", sorted(PRIORS))
def test_every_method_runs_on_every_family(method, family):
    gm = _mixture(2)
    prior = PRIORS[family](gm)
    model = _model(prior, LinearGaussian(MaskOperator(torch.tensor([True, False])), 0.2))
    post = posterior_sample(model, torch.tensor([0.5], dtype=F64), site="x", method=method, num_samples=64,
                            steps=20, generator=torch.Generator().manual_seed(0))
    assert post.samples.shape == (64, 2) and post.samples.dtype == F64
    assert bool(torch.isfinite(post.samples).all())
    # the observed coordinate is pulled to y = 0.5 (prior spread of x_0 is > 1)
    assert abs(float(post.samples[:, 0].mean()) - 0.5) < 0.5
    assert post.nfe >= 20


@pytest.mark.parametrize("family,vjp", [("score_sde", True), ("score_sde", False), ("edm", True), ("fm", False)])
def test_pigdm_is_exact_for_a_standard_normal_prior(family, vjp):
    # x_0 | x_σ is N(x̂₀, σ²/(1+σ²) I) and ∂x̂₀/∂x_σ = I/(1+σ²) exactly: both ΠGDM variants are exact
    gm = GaussianMixture(torch.ones(1, dtype=F64), torch.zeros(1, 3, dtype=F64), torch.eye(3, dtype=F64)[None])
    a = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, -1.0]], dtype=F64)
    y = torch.tensor([0.8, -0.3], dtype=F64)
    exact = gm.posterior(a, 0.3, y)
    post = posterior_sample(_model(PRIORS[family](gm), LinearGaussian(a, 0.3)), y, site="x", method="pigdm",
                            num_samples=2000, steps=200, vjp=vjp, generator=torch.Generator().manual_seed(0))
    se = exact.covariance().diagonal().sqrt() / math.sqrt(2000)
    assert bool(((post.mean() - exact.mean()).abs() < 4 * se + 0.01).all())
    torch.testing.assert_close(torch.cov(post.samples.T), exact.covariance(), atol=0.05, rtol=0)


@pytest.mark.parametrize("family", sorted(PRIORS))
def test_smc_matches_the_exact_posterior_in_2d(family):
    gm = _mixture(2)
    rows = posterior_calibration(PRIORS[family](gm), gm, DenseOperator(torch.tensor([[1.0, 0.5]], dtype=F64)), 0.3,
                                 methods=("smc",), num_samples=1000, method_options={"smc": {"steps": 100}})
    exact, smc = rows
    assert exact["method"] == "exact" and smc["method"] == "smc"
    assert smc["mean_err"] < 0.15
    assert abs(smc["cover90"] - 0.9) < 0.05 and abs(smc["cover50"] - 0.5) < 0.07


@pytest.mark.slow
def test_smc_on_a_ddpm_with_a_mask_in_16d():
    # on EDM's ρ = 7 noise levels 100 levels suffice in 16-D: more levels (300, 1000) do not lower the error
    # (docs/conditioning.md, `examples/posterior_calibration.py --smc-16d`); what remains is the particles'
    gm = _mixture(16)
    mask = torch.zeros(16, dtype=torch.bool)
    mask[::2] = True
    rows = posterior_calibration(_ddpm(gm), gm, MaskOperator(mask), 0.2, methods=("smc",), num_samples=400,
                                 method_options={"smc": {"steps": 100}})
    exact, smc = rows
    assert smc["mean_err"] < 3 * exact["mean_err"] + 0.1
    assert abs(smc["cover90"] - 0.9) < 0.04


def test_clip_x0_clamps_every_denoised_state():
    # a point mass at 5 clipped to [-1, 1]: every method returns draws inside the range
    gm = GaussianMixture(torch.ones(1, dtype=F64), torch.full((1, 2), 5.0, dtype=F64), 0.01 * torch.eye(2, dtype=F64)[None])
    model = _model(_score_sde(gm), LinearGaussian(MaskOperator(torch.tensor([True, False])), 0.2))
    for method in ("dps", "pigdm", "ddrm", "smc"):
        post = posterior_sample(model, torch.tensor([5.0], dtype=F64), site="x", method=method, num_samples=8, steps=10,
                                clip_x0=(-1, 1), generator=torch.Generator().manual_seed(0))
        assert float(post.samples.abs().max()) <= 1.0


def test_dps_with_a_non_linear_likelihood():
    gm = GaussianMixture(torch.ones(1, dtype=F64), torch.zeros(1, 2, dtype=F64), torch.eye(2, dtype=F64)[None])
    prior = _score_sde(gm)

    def model(y):
        x = pyro.sample("x", prior.as_distribution())
        pyro.sample("y", dist.Normal(x.norm(dim=-1), 0.1), obs=y)

    post = posterior_sample(model, torch.tensor(2.0, dtype=F64), site="x", method="smc", num_samples=500, steps=100,
                            generator=torch.Generator().manual_seed(0))
    radius = post.samples.norm(dim=-1)
    assert abs(float(radius.mean()) - 2.0) < 0.1  # the posterior is a ring of radius ≈ 2


def test_mcmc_on_a_flow_matches_a_grid_posterior():
    torch.manual_seed(0)
    flow = pg.flows.Flow(2, "realnvp", num_layers=2)  # float32, as flows are built
    a = torch.tensor([[1.0, 1.0]])
    y = torch.tensor([0.5])

    def model(y):
        x = pyro.sample("x", flow.as_distribution())
        pyro.sample("y", dist.Normal(x @ a.T, 0.5).to_event(1), obs=y)

    post = posterior_sample(model, y, site="x", method="mcmc", num_samples=2000, num_chains=20, warmup_steps=150,
                            generator=torch.Generator().manual_seed(0))
    u = torch.linspace(-8, 8, 321)
    grid = torch.stack(torch.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        logp = flow.log_prob(grid) + dist.Normal(grid @ a.T, 0.5).to_event(1).log_prob(y)
    w = torch.softmax(logp, 0)
    mean = (w[:, None] * grid).sum(0)
    sd = (w[:, None] * (grid - mean) ** 2).sum(0).sqrt()
    assert post.accept_prob is not None and 0.3 < float(post.accept_prob.mean()) < 0.9
    # 20 chains x 100 correlated draws: allow 6 standard errors of an effective 200 draws
    assert bool(((post.mean() - mean).abs() < 6 * sd / math.sqrt(200)).all())
    assert bool(((post.std() - sd).abs() < 0.15 * sd).all())
    idata = post.to_inference_data()
    assert "acceptance_rate" in idata.sample_stats


def test_diffusion_log_prob_is_differentiable_through_the_ode():
    gm = GaussianMixture(torch.ones(1, dtype=F64), torch.zeros(1, 2, dtype=F64), torch.eye(2, dtype=F64)[None])
    d = _score_sde(gm).as_distribution()
    x = torch.tensor([[0.3, -1.2], [1.0, 0.5]], dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(d.log_prob(x).sum(), x)
    torch.testing.assert_close(grad, -x.detach(), atol=1e-3, rtol=0)  # N(0, I): ∇ log p = -x
    with torch.no_grad():
        assert not d.log_prob(x).requires_grad


def test_smc_result_converts_to_arviz():
    gm = _mixture(2)
    model = _model(_score_sde(gm), LinearGaussian(MaskOperator(torch.tensor([True, False])), 0.2))
    post = posterior_sample(model, torch.tensor([0.5], dtype=F64), site="x", method="smc", num_samples=50, steps=10)
    assert post.log_weights.shape == (50,) and post.ess.shape == (10,)
    idata = post.to_inference_data()
    assert dict(idata.posterior.sizes)["draw"] == 50


@pytest.mark.slow
def test_smc_converges_as_particles_grow():
    gm = _mixture(2)
    op = DenseOperator(torch.tensor([[1.0, 0.5]], dtype=F64))
    errors, rows = [], None
    for k in (50, 400, 2000):
        rows = posterior_calibration(_score_sde(gm), gm, op, 0.3, methods=("smc",), num_samples=k,
                                     num_observations=3, method_options={"smc": {"steps": 300}}, seed=1)
        errors.append(rows[1]["sw"])
    assert errors[2] < errors[1] < errors[0]
    # coverage of the central 90 % interval at K = 2000: the MC standard error of an interval from n draws
    # is about sqrt(0.9 * 0.1 / n) per coordinate (0.004 for 3 x 2000 draws); allow 3 of them plus 0.01 for
    # resampling (fewer distinct draws than K) and the chain's discretisation
    assert abs(rows[1]["cover90"] - 0.9) < 3 * math.sqrt(0.09 / (3 * 2000)) + 0.01


@pytest.mark.parametrize("method", ["pigdm", "ddrm", "smc"])
def test_image_event_shapes_with_blur_and_subsample(method):
    # the exact predictor of N(0, I) images, ε̂ = σ_t x: then p(x | y) is Gaussian and ΠGDM is exact
    class StandardNormalEps(torch.nn.Module):
        def forward(self, x, index):
            return model.schedule.marginal_std(model.schedule.index_to_time(index).to(x))[:, None, None, None] * x

    model = DDPM((1, 4, 4), num_steps=1000, eps_net=StandardNormalEps())
    for op in (pg.infer.BlurOperator((1, 4, 4), size=3), pg.infer.SubsampleOperator((1, 4, 4), factor=2)):
        lik = LinearGaussian(op, 0.1)
        y = lik.sample(torch.randn(1, 1, 4, 4))[0]
        post = posterior_sample(_model(model, lik), y, site="x", method=method, num_samples=16, steps=10)
        assert post.samples.shape == (16, 1, 4, 4) and bool(torch.isfinite(post.samples).all())


@pytest.mark.slow
def test_mcmc_on_a_score_sde_through_the_ode():
    # N(0, I) prior with its exact score; y = x_0 + N(0, 0.5²): posterior mean of x_0 is y / 1.25, sd 0.447
    gm = GaussianMixture(torch.ones(1, dtype=F64), torch.zeros(1, 2, dtype=F64), torch.eye(2, dtype=F64)[None])
    prior = _score_sde(gm)

    def model(y):
        x = pyro.sample("x", prior.as_distribution())
        pyro.sample("y", dist.Normal(x[..., 0], 0.5), obs=y)

    post = posterior_sample(model, torch.tensor(1.0, dtype=F64), site="x", method="mcmc", num_samples=200,
                            num_chains=10, warmup_steps=30, init=torch.zeros(10, 2, dtype=F64),
                            generator=torch.Generator().manual_seed(0))
    # about 50 effective draws: 4 standard errors of 0.447 / sqrt(50)
    assert abs(float(post.mean()[0]) - 0.8) < 0.25 and abs(float(post.mean()[1])) < 0.25
    assert float(post.accept_prob.mean()) > 0.1


@pytest.mark.parametrize("method", ["pigdm", "smc"])
def test_a_standardized_model_is_a_prior_on_the_original_values(method):
    # x = loc + scale ⊙ z with z ~ N(0, I): the samplers run on z, the observation y = A x + ε is of x
    from probgen.ops.standardize import Standardized

    gm = GaussianMixture(torch.ones(1, dtype=F64), torch.zeros(1, 2, dtype=F64), torch.eye(2, dtype=F64)[None])
    loc, scale = torch.tensor([3.0, -1.0], dtype=F64), torch.tensor([2.0, 0.5], dtype=F64)
    prior = Standardized(_score_sde(gm), loc=loc, scale=scale)
    a = torch.tensor([[1.0, 1.0]], dtype=F64)
    y = torch.tensor([2.5], dtype=F64)
    exact = GaussianMixture(torch.ones(1, dtype=F64), loc[None], torch.diag(scale**2)[None]).posterior(a, 0.3, y)
    post = posterior_sample(_model(prior, LinearGaussian(a, 0.3)), y, site="x", method=method, num_samples=2000,
                            steps=100, generator=torch.Generator().manual_seed(0))
    se = exact.covariance().diagonal().sqrt() / math.sqrt(2000)
    assert bool(((post.mean() - exact.mean()).abs() < 5 * se + 0.02).all())
    torch.testing.assert_close(torch.cov(post.samples.T), exact.covariance(), atol=0.08, rtol=0.05)
