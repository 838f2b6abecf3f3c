"""``probgen.vae.VAE``: ELBO estimators against Pyro and a closed form, flow posteriors, errors, checkpoints."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

import probgen as pg
from probgen.vae import VAE
from probgen.vae.posterior import sample_posterior
from probgen.protocol import follows_protocol

D, L, SIGMA = 3, 2, 0.5
W = torch.tensor([[1.0, 0.3], [-0.5, 2.0], [1.0, 0.0]], dtype=torch.float64)
B_VEC = torch.tensor([0.5, -1.0, 0.2], dtype=torch.float64)


class LinearDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(L, D).double()
        with torch.no_grad():
            self.lin.weight.copy_(W)
            self.lin.bias.copy_(B_VEC)

    def forward(self, z):
        return self.lin(z)


class LinearEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D, L).double()
        self.log_scale = nn.Parameter(torch.tensor([-0.5, -1.0], dtype=torch.float64))

    def forward(self, x):
        return self.lin(x), self.log_scale.exp().expand(x.shape[0], L)


def linear_vae(**kw) -> VAE:
    return VAE(LinearEncoder(), LinearDecoder(), L, obs_scale=SIGMA, **kw).double()


def closed_form_elbo(vae: VAE, x):
    """E_q[log N(x; Wz + b, σ²I)] - KL(N(m, s²) || N(0, I)) for the linear decoder, exactly."""
    m, s = vae.encode(x)
    mean_x = m @ W.T + B_VEC
    expected_loglik = (torch.distributions.Normal(mean_x, SIGMA).log_prob(x).sum(-1)
                       - (s**2 @ (W**2).sum(0)) / (2 * SIGMA**2))
    kl = 0.5 * (s**2 + m**2 - 1 - 2 * s.log()).sum(-1)
    return expected_loglik - kl


def test_follows_the_model_protocol():
    vae = VAE(latent_dim=2, event_shape=(1, 8, 8), hidden=(16,))
    assert follows_protocol(vae) == []
    assert vae.family == "vae"
    x = torch.randn(5, 1, 8, 8)
    assert vae.sample(3).shape == (3, 1, 8, 8)
    assert vae.sample(3, mean=False).shape == (3, 1, 8, 8)
    assert vae.reconstruct(x).shape == (5, 1, 8, 8)
    loc, scale = vae.encode(x)
    assert loc.shape == scale.shape == (5, 2) and bool((scale > 0).all())
    assert vae.as_distribution(num_particles=5).log_prob(x).shape == (5,)
    assert vae.as_distribution().sample((2, 3)).shape == (2, 3, 1, 8, 8)


@pytest.mark.parametrize("estimator", ["analytic", "mc"])
def test_loss_is_minus_mean_elbo_and_matches_pyro(estimator):
    vae = linear_vae(elbo=estimator)
    x = torch.randn(7, D, dtype=torch.float64)
    torch.manual_seed(3)
    loss = vae.loss(x)
    torch.manual_seed(3)
    elbo = vae.elbo(x)
    torch.testing.assert_close(loss, -elbo.mean(), rtol=1e-12, atol=1e-12)
    # Pyro's own estimators on the model/guide programs give the same value for the same draws
    pyro_elbo = TraceMeanField_ELBO if estimator == "analytic" else Trace_ELBO
    torch.manual_seed(4)
    ref = pyro_elbo().differentiable_loss(vae.model, vae.guide, x)
    torch.manual_seed(4)
    torch.testing.assert_close(ref, -vae.elbo(x).sum(), rtol=1e-12, atol=1e-12)


def test_analytic_and_mc_elbo_agree_with_the_closed_form_in_expectation():
    vae = linear_vae()
    x0 = torch.tensor([[0.3, -0.2, 1.0]], dtype=torch.float64)
    truth = closed_form_elbo(vae, x0).item()
    x = x0.expand(20_000, D)
    for estimator in ("analytic", "mc"):
        values = vae.elbo(x, estimator=estimator).detach()
        se = values.std().item() / math.sqrt(values.numel())
        assert abs(values.mean().item() - truth) <= 4 * se, (estimator, values.mean().item(), truth, se)
    # the analytic KL removes the KL's sampling noise: a smaller variance
    assert vae.elbo(x, estimator="analytic").var() < vae.elbo(x, estimator="mc").var()


def test_gradients_flow_to_encoder_decoder_and_learned_scale():
    vae = VAE(latent_dim=2, event_shape=(4,), hidden=(8,), learn_obs_scale=True)
    vae.loss(torch.randn(6, 4)).backward()
    for name, p in vae.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
    assert "observation.log_obs_scale" in dict(vae.named_parameters())


@pytest.mark.parametrize("kind", ["iaf", "coupling"])
def test_flow_posterior_log_density_matches_transformed_distribution(kind):
    torch.manual_seed(0)
    vae = VAE(latent_dim=3, event_shape=(5,), hidden=(16,), posterior=kind).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    loc, scale, context = vae._encode(x)
    z, log_q = sample_posterior(loc, scale, vae._transforms(context), 6, None)
    assert z.shape == (6, 4, 3) and log_q.shape == (6, 4)
    q = vae.posterior(x)
    assert isinstance(q, pyro.distributions.TransformedDistribution)
    # a fresh copy of z defeats the transforms' caches: Pyro inverts the flow (sequentially for IAF)
    torch.testing.assert_close(q.log_prob(z.detach().clone()), log_q, rtol=1e-9, atol=1e-9)
    # and the flow is not the identity: log q differs from the Gaussian base's density at z
    base = pyro.distributions.Normal(loc, scale).to_event(1).log_prob(z)
    assert (base - log_q).abs().max() > 1e-3


def test_flow_posterior_log_density_autograd_jacobian():
    torch.manual_seed(1)
    vae = VAE(latent_dim=3, event_shape=(4,), hidden=(8,), posterior="iaf").double()
    x = torch.randn(1, 4, dtype=torch.float64)
    loc, scale, context = vae._encode(x)
    transforms = vae._transforms(context)

    def push(z0):
        z = z0.reshape(1, 3)
        for t in transforms:
            z = t(z)
        return z.reshape(3)

    z0 = torch.randn(3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(push, z0)
    ldj = sum(t.log_abs_det_jacobian(a, b) for t, a, b in _path(transforms, z0.reshape(1, 3)))
    torch.testing.assert_close(ldj.reshape(()), torch.linalg.slogdet(jac)[1], rtol=1e-9, atol=1e-9)


def _path(transforms, z):
    out = []
    for t in transforms:
        nxt = t(z)
        out.append((t, z, nxt))
        z = nxt
    return out


def test_flow_posterior_training_improves_elbo():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(512, 2, generator=g)
    x = torch.cat([z, z[:, :1] * z[:, 1:], z.pow(2).sum(-1, keepdim=True)], -1) + 0.1 * torch.randn(512, 4, generator=g)
    torch.manual_seed(0)
    vae = VAE(latent_dim=2, event_shape=(4,), hidden=(32,), posterior="iaf", obs_scale=0.3)
    held_out = x[:256].repeat(4, 1)
    before = vae.elbo(held_out).detach()
    pg.fit(vae, x[256:], steps=150, batch_size=128, lr=5e-3, seed=0, progress=False)
    after = vae.elbo(held_out).detach()
    gain = after - before  # paired over the same points; SE of the mean difference
    se = gain.std().item() / math.sqrt(gain.numel())
    assert gain.mean().item() > 5 * se and gain.mean().item() > 1.0, (gain.mean().item(), se)


def test_bernoulli_model_on_binary_data_and_error_on_other_values():
    vae = VAE(latent_dim=2, event_shape=(6,), likelihood="bernoulli", hidden=(8,))
    x = (torch.rand(5, 6) > 0.5).float()
    assert torch.isfinite(vae.loss(x))
    samples = vae.sample(4, mean=False)
    assert set(samples.unique().tolist()) <= {0.0, 1.0}
    assert bool(((vae.sample(4) > 0) & (vae.sample(4) < 1)).all())  # mean=True gives probabilities
    bad = x.clone()
    bad[0, 0] = 0.5
    for fn in (vae.loss, vae.elbo, vae.log_likelihood, vae.model):
        with pytest.raises(ValueError, match=r"must be binary \(0/1\) for likelihood=.bernoulli.; got .*e\.g\. 0\.5"):
            fn(bad)


def test_argument_errors_name_the_argument_and_the_choices():
    with pytest.raises(ValueError, match=r"unknown likelihood 'poisson'; valid choices: 'gaussian', 'bernoulli'"):
        VAE(latent_dim=2, event_shape=(3,), likelihood="poisson")
    with pytest.raises(ValueError, match=r"unknown posterior 'maf'; valid choices: 'gaussian', 'iaf', 'coupling'"):
        VAE(latent_dim=2, event_shape=(3,), posterior="maf")
    with pytest.raises(ValueError, match=r"unknown elbo 'exact'; valid choices: 'analytic', 'mc'"):
        VAE(latent_dim=2, event_shape=(3,), elbo="exact")
    with pytest.raises(ValueError, match="elbo='analytic' needs posterior='gaussian'"):
        VAE(latent_dim=2, event_shape=(3,), posterior="iaf", elbo="analytic")
    with pytest.raises(ValueError, match="latent_dim is required"):
        VAE(event_shape=(3,))
    with pytest.raises(ValueError, match="event_shape is required"):
        VAE(latent_dim=2)
    with pytest.raises(ValueError, match="needs latent_dim >= 2"):
        VAE(latent_dim=1, event_shape=(3,), posterior="coupling")
    with pytest.raises(ValueError, match="obs_scale must be > 0"):
        VAE(latent_dim=2, event_shape=(3,), obs_scale=0.0)
    with pytest.raises(TypeError, match="encoder must be a torch.nn.Module"):
        VAE(lambda x: x, None, 2, event_shape=(3,))


def test_wrong_shapes_and_dtypes_are_refused():
    vae = VAE(latent_dim=2, event_shape=(1, 8, 8), hidden=(8,))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 1, 8, 8\), got \(5, 64\)"):
        vae.loss(torch.randn(5, 64))
    with pytest.raises(TypeError, match="x is torch.float64 but the model is torch.float32"):
        vae.elbo(torch.randn(5, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        vae.loss(torch.full((2, 1, 8, 8), float("nan")))

    class BadEncoder(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 3), torch.ones(x.shape[0], 3)

    bad = VAE(BadEncoder(), LinearDecoder().float(), L)
    assert bad.event_shape == (D,)  # inferred from the decoder
    with pytest.raises(ValueError, match=r"encoder \(loc\) returned shape \(4, 3\); expected \(4, 2\)"):
        bad.loss(torch.randn(4, D))


@pytest.mark.parametrize("posterior", ["gaussian", "iaf"])
def test_checkpoint_round_trip(tmp_path, posterior):
    torch.manual_seed(0)
    vae = VAE(latent_dim=2, event_shape=(1, 8, 8), hidden=(16,), posterior=posterior, learn_obs_scale=True)
    with torch.no_grad():
        vae.observation.log_obs_scale.fill_(-1.3)
    path = pg.save(tmp_path / "vae.pt", vae)
    back = pg.load(path)
    assert type(back) is VAE and back.config() == vae.config()
    x = torch.randn(3, 1, 8, 8)
    a = vae.log_likelihood(x, 20, generator=torch.Generator().manual_seed(0))
    b = back.log_likelihood(x, 20, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_config_refuses_custom_networks():
    with pytest.raises(ValueError, match=r"custom encoder and decoder; save it with probgen.save.*model=VAE"):
        linear_vae().config()


def test_fit_trains_on_digits_and_iwae_tightens_the_elbo():
    x, _ = pg.data.digits("train", binarize=True)
    x_test, _ = pg.data.digits("test", binarize=True)
    torch.manual_seed(0)
    vae = VAE(latent_dim=4, event_shape=(1, 8, 8), likelihood="bernoulli", hidden=(64,))
    history = pg.fit(vae, x, steps=150, batch_size=128, lr=3e-3, seed=0, progress=False)
    assert history.losses[-1] < history.losses[0] - 5.0
    with torch.no_grad():
        elbo = vae.elbo(x_test.repeat(20, 1, 1, 1)).reshape(20, -1).mean(0)  # 20-draw average per image
        iwae = vae.log_likelihood(x_test, 100, generator=torch.Generator().manual_seed(0))
    diff = iwae - elbo  # paired per image: E[L_100] >= E[L_1]; the test uses the SE of the mean difference
    assert diff.mean() > 3 * diff.std() / math.sqrt(diff.numel())
