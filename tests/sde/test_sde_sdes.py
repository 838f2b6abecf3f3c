"""Tests of probgen.sde: closed forms, the marginal/variance ODE, discretisations, validation, dtypes."""

from __future__ import annotations

import math

import pytest
import torch
import torchsde

from probgen.sde import SDE, SubVPSDE, VESDE, VPSDE

SDES = {
    "vp": lambda: VPSDE(beta_min=0.1, beta_max=20.0),
    "subvp": lambda: SubVPSDE(beta_min=0.1, beta_max=20.0),
    "ve": lambda: VESDE(sigma_min=0.01, sigma_max=50.0),
}


@pytest.fixture(params=sorted(SDES))
def sde(request) -> SDE:
    return SDES[request.param]()


# ----------------------------------------------------------------------------- closed forms
def test_vp_closed_forms():
    sde = VPSDE(beta_min=0.1, beta_max=20.0)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    beta = 0.1 + t * 19.9
    log_alpha = -0.25 * t**2 * 19.9 - 0.5 * t * 0.1
    torch.testing.assert_close(sde.beta(t), beta)
    torch.testing.assert_close(sde.diffusion(t), beta.sqrt())
    torch.testing.assert_close(sde.marginal_scale(t), log_alpha.exp())
    torch.testing.assert_close(sde.marginal_std(t), (1 - (2 * log_alpha).exp()).sqrt())
    x = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(sde.drift(x, t), -0.5 * beta[:, None] * x)
    assert sde.prior_std == 1.0


def test_subvp_closed_forms():
    sde = SubVPSDE(beta_min=0.1, beta_max=20.0)
    t = torch.tensor([0.05, 0.3, 1.0], dtype=torch.float64)
    beta = 0.1 + t * 19.9
    integral = 0.1 * t + 0.5 * 19.9 * t**2  # int_0^t beta(s) ds
    torch.testing.assert_close(sde.diffusion(t), (beta * (1 - torch.exp(-2 * integral))).sqrt())
    torch.testing.assert_close(sde.marginal_scale(t), torch.exp(-0.5 * integral))
    torch.testing.assert_close(sde.marginal_std(t), 1 - torch.exp(-integral))


def test_ve_closed_forms():
    sde = VESDE(sigma_min=0.01, sigma_max=50.0)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    sigma = 0.01 * (5000.0**t)
    torch.testing.assert_close(sde.sigma(t), sigma)
    torch.testing.assert_close(sde.marginal_std(t), sigma)
    torch.testing.assert_close(sde.marginal_scale(t), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(sde.diffusion(t), sigma * math.sqrt(2 * math.log(5000.0)))
    x = torch.randn(3, 2, 2, dtype=torch.float64)
    assert torch.equal(sde.drift(x, t), torch.zeros_like(x))
    assert sde.prior_std == 50.0


def test_variance_ode_links_diffusion_and_marginal(sde):
    """d sigma^2/dt = 2 (d log alpha/dt) sigma^2 + g^2 (Särkkä & Solin 2019, eq. 5.51), by autograd.

    This ties ``diffusion`` to ``marginal_std``/``marginal_scale`` independently of their formulas,
    and ``d log alpha / dt`` to the drift coefficient ``f(x, t) = (d log alpha/dt) x``.
    """
    t = torch.tensor([0.01, 0.2, 0.5, 0.9], dtype=torch.float64, requires_grad=True)
    var = sde.marginal_std(t) ** 2
    log_alpha = sde.marginal_scale(t).log() + 0.0 * t  # VE: alpha = 1 carries no graph
    (dvar,) = torch.autograd.grad(var.sum(), t)
    (dlog_alpha,) = torch.autograd.grad(log_alpha.sum(), t)
    with torch.no_grad():
        g2 = sde.diffusion(t) ** 2
        torch.testing.assert_close(dvar, 2 * dlog_alpha * var + g2)
        x = torch.randn(4, 3, dtype=torch.float64)
        torch.testing.assert_close(sde.drift(x, t), dlog_alpha[:, None] * x)


def test_marginal_shapes_any_event(sde):
    x0 = torch.randn(5, 1, 3, 2)
    t = torch.rand(5)
    mean, std = sde.marginal(x0, t)
    assert mean.shape == x0.shape and std.shape == (5,)
    torch.testing.assert_close(mean, sde.marginal_scale(t)[:, None, None, None] * x0)


def test_prior_log_prob_matches_torch(sde):
    z = sde.prior_sample((6, 2, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert z.shape == (6, 2, 3) and z.dtype == torch.float64
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(z).sum((1, 2))
    torch.testing.assert_close(sde.prior_log_prob(z), ref)


def test_prior_sample_seeded(sde):
    a = sde.prior_sample((4, 2), generator=torch.Generator().manual_seed(3))
    b = sde.prior_sample((4, 2), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------- discretisations
def test_vp_discretize_is_ddpm_step():
    sde = VPSDE()
    x = torch.randn(3, 2, dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    dt = 1e-3
    f, G = sde.discretize(x, t, dt)
    beta_i = (0.1 + 19.9 * t) * dt
    torch.testing.assert_close(f, (torch.sqrt(1 - beta_i)[:, None] - 1) * x)
    torch.testing.assert_close(G, beta_i.sqrt())
    torch.testing.assert_close(sde.discrete_alpha(t, dt), 1 - beta_i)


def test_ve_discretize_is_smld_step():
    sde = VESDE()
    x = torch.randn(2, 2, dtype=torch.float64)
    t = torch.tensor([0.5, 0.0005], dtype=torch.float64)
    f, G = sde.discretize(x, t, 1e-3)
    assert torch.equal(f, torch.zeros_like(x))
    sig = sde.sigma(t)
    expected = torch.stack([(sig[0] ** 2 - sde.sigma(t[:1] - 1e-3)[0] ** 2).sqrt(), sig[1]])  # sigma_{-1} = 0
    torch.testing.assert_close(G, expected)
    torch.testing.assert_close(sde.discrete_alpha(t, 1e-3), torch.ones(2, dtype=torch.float64))


def test_subvp_discretize_is_euler_maruyama():
    sde = SubVPSDE()
    x = torch.randn(2, 3, dtype=torch.float64)
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    f, G = sde.discretize(x, t, 0.01)
    torch.testing.assert_close(f, sde.drift(x, t) * 0.01)
    torch.testing.assert_close(G, sde.diffusion(t) * 0.1)


def test_reverse_and_ode_drift(sde):
    x = torch.randn(4, 2, dtype=torch.float64)
    t = torch.full((4,), 0.4, dtype=torch.float64)

    def score(y, s):
        return -2.0 * y

    g2 = sde.diffusion(t)[:, None] ** 2
    torch.testing.assert_close(sde.reverse_drift(score, x, t), sde.drift(x, t) + 2.0 * g2 * x)
    torch.testing.assert_close(sde.ode_drift(score, x, t), sde.drift(x, t) + g2 * x)
    rsde = sde.reverse(score)
    torch.testing.assert_close(rsde.drift(x, t), sde.reverse_drift(score, x, t))
    torch.testing.assert_close(rsde.diffusion(t), sde.diffusion(t))
    flow = sde.reverse(score, probability_flow=True)
    torch.testing.assert_close(flow.drift(x, t), sde.ode_drift(score, x, t))
    assert torch.equal(flow.diffusion(t), torch.zeros(4, dtype=torch.float64))
    f, G = sde.discretize(x, t, 0.01)
    rf, rG = rsde.discretize(x, t, 0.01)
    torch.testing.assert_close(rf, f + 2.0 * G[:, None] ** 2 * x)
    torch.testing.assert_close(rG, G)
    assert torch.equal(flow.discretize(x, t, 0.01)[1], torch.zeros(4, dtype=torch.float64))


def test_config_rebuilds(sde):
    again = type(sde)(**sde.config())
    assert again.config() == sde.config()
    assert type(sde).__name__ in repr(sde)


# ----------------------------------------------------------------------------- Monte Carlo of the forward SDE
class _Forward(torch.nn.Module):
    noise_type = "diagonal"
    sde_type = "stratonovich"  # g depends on t only: Itô and Stratonovich agree; midpoint is O(dt^2) in law

    def __init__(self, sde):
        super().__init__()
        self.sde = sde

    def f(self, t, y):
        return self.sde.drift(y, t.expand(y.shape[0]))

    def g(self, t, y):
        return self.sde.diffusion(t.expand(y.shape[0]))[:, None].expand_as(y)


@pytest.mark.parametrize("name", sorted(SDES))
def test_marginal_matches_forward_sde_monte_carlo(name):
    """Mean and std of x_t from torchsde simulations match ``marginal`` within 4 standard errors.

    SE of a coordinate's sample mean is std/sqrt(n); SE of the sample std is std/sqrt(2n) (normal
    theory). For VE the chain starts from N(x0, sigma_min^2 I), the law ``marginal`` assumes at t = 0.
    """
    sde = SDES[name]()
    n = 4000
    x0 = torch.tensor([1.5, -1.0], dtype=torch.float64)
    gen = torch.Generator().manual_seed(11)
    y0 = x0.expand(n, 2).clone()
    if name == "ve":
        y0 = y0 + sde.sigma_min * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    ts = torch.tensor([0.0, 0.1, 0.5, 1.0], dtype=torch.float64)
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(n, 2), dtype=torch.float64, entropy=5)
    with torch.no_grad():
        ys = torchsde.sdeint(_Forward(sde), y0, ts, bm=bm, method="midpoint", dt=2e-3)
    for k in range(1, 4):
        t = ts[k : k + 1]
        mean, std = sde.marginal(x0[None], t)
        sample = ys[k]
        se_mean = std / math.sqrt(n)
        assert (sample.mean(0) - mean[0]).abs().max() < 4 * se_mean, (name, float(t))
        se_std = std / math.sqrt(2 * n)
        assert (sample.std(0) - std).abs().max() < 4 * se_std, (name, float(t))


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: VPSDE(beta_min=-0.1), r"beta_min must be >= 0"),
        (lambda: VPSDE(beta_min=1.0, beta_max=0.5), r"beta_max must be > beta_min"),
        (lambda: SubVPSDE(beta_min=0.1, beta_max=float("nan")), r"beta_max must be finite"),
        (lambda: VESDE(sigma_min=0.0), r"sigma_min must be > 0"),
        (lambda: VESDE(sigma_min=5.0, sigma_max=1.0), r"sigma_max must be > sigma_min"),
        (lambda: VPSDE(beta_min="a"), r"beta_min must be a number"),
    ],
)
def test_constructor_validation(factory, match):
    with pytest.raises((ValueError, TypeError), match=match):
        factory()


def test_time_validation(sde):
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        sde.marginal(x, torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        sde.diffusion(torch.tensor([-0.1]))
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        sde.drift(x, torch.tensor([0.5, 0.5, 0.5]))
    with pytest.raises(TypeError, match=r"t must be a torch.Tensor"):
        sde.marginal_std(0.5)
    with pytest.raises(ValueError, match=r"dt must be > 0"):
        sde.discretize(x, torch.tensor([0.5, 0.5]), 0.0)


def test_input_validation(sde):
    with pytest.raises(ValueError, match=r"x0 contains 1 NaN"):
        sde.marginal(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0.5]))
    with pytest.raises(TypeError, match=r"x must be float32 or float64"):
        sde.drift(torch.zeros(2, 3, dtype=torch.long), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"shape must be a tuple \(batch, \*event\)"):
        sde.prior_sample((0, 2))


def test_score_shape_validation(sde):
    x = torch.zeros(2, 3)
    t = torch.tensor([0.5, 0.5])
    with pytest.raises(ValueError, match=r"score_fn returned shape \(2, 2\); expected \(2, 3\)"):
        sde.reverse_drift(lambda y, s: y[:, :2], x, t)
    with pytest.raises(TypeError, match=r"score_fn must return a torch.Tensor"):
        sde.ode_drift(lambda y, s: 1.0, x, t)
    with pytest.raises(TypeError, match=r"score_fn must be callable"):
        sde.reverse(None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_preserved(sde, dtype):
    x = torch.randn(3, 2, dtype=dtype)
    t = torch.rand(3, dtype=dtype)
    mean, std = sde.marginal(x, t)
    assert mean.dtype == dtype and std.dtype == dtype
    assert sde.drift(x, t).dtype == dtype and sde.diffusion(t).dtype == dtype
    assert sde.prior_log_prob(x).dtype == dtype
    f, G = sde.discretize(x, t, 0.01)
    assert f.dtype == dtype and G.dtype == dtype
    assert sde.ode_drift(lambda y, s: -y, x, t).dtype == dtype
    assert sde.prior_sample((3, 2), dtype=dtype).dtype == dtype
