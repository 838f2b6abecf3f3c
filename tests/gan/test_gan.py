"""Tests of probgen.gan: objectives against their formulas, the gradient penalty against a hand computation,
the generator as a Pyro program, the two-player step, fit/checkpoint integration and argument errors."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine
from torch import nn

import probgen as pg
from probgen.gan import (
    GAN,
    WGANGP,
    discriminator_loss,
    gradient_penalty,
    mode_coverage,
    nonsaturating_generator_loss,
    sample_diversity,
    wasserstein_critic_loss,
)

MODELS = [GAN, WGANGP]
SMALL = dict(latent_dim=3, hidden=(16, 16))


class LinearCritic(nn.Module):
    """f(x) = wᵀx + c: its gradient is w everywhere."""

    def __init__(self, w):
        super().__init__()
        self.lin = nn.Linear(len(w), 1, dtype=torch.float64)
        with torch.no_grad():
            self.lin.weight.copy_(torch.as_tensor(w, dtype=torch.float64)[None])
            self.lin.bias.fill_(0.3)

    def forward(self, x):
        return self.lin(x).squeeze(-1)


# ------------------------------------------------------------------------------------------------
# objectives


def test_gradient_penalty_linear_critic_equals_hand_computation():
    w = torch.tensor([0.6, -1.2, 2.0], dtype=torch.float64)
    critic = LinearCritic(w).double()
    real, fake = torch.randn(7, 3, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    expected = (w.norm() - 1.0) ** 2
    gp = gradient_penalty(critic, real, fake)
    torch.testing.assert_close(gp, expected, rtol=1e-12, atol=1e-12)
    # any interpolation weight gives the same value for a linear critic
    gp0 = gradient_penalty(critic, real, fake, eps=torch.zeros(7, dtype=torch.float64))
    torch.testing.assert_close(gp0, expected, rtol=1e-12, atol=1e-12)


def test_gradient_penalty_quadratic_critic_at_given_interpolates():
    # f(x) = ½|x|², ∇f(x̂) = x̂, so GP = mean (|x̂| - 1)² with x̂ = ε x + (1 - ε) x̃
    critic = lambda x: 0.5 * (x**2).sum(-1)  # noqa: E731
    real, fake = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    eps = torch.rand(5, dtype=torch.float64)
    x_hat = eps[:, None] * real + (1 - eps[:, None]) * fake
    expected = ((x_hat.norm(dim=1) - 1) ** 2).mean()
    torch.testing.assert_close(gradient_penalty(critic, real, fake, eps=eps), expected)


def test_gradient_penalty_backpropagates_to_critic_parameters():
    # d/dw (|w| - 1)² = 2 (|w| - 1) w / |w|
    w = torch.tensor([3.0, 4.0], dtype=torch.float64)
    critic = LinearCritic(w).double()
    gp = gradient_penalty(critic, torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64))
    gp.backward()
    torch.testing.assert_close(critic.lin.weight.grad[0], 2 * (5.0 - 1.0) * w / 5.0)


def test_gradient_penalty_event_shape_images():
    # a linear critic on (B, 1, 2, 2) images: the norm is taken over every event dimension
    w = torch.arange(1.0, 5.0, dtype=torch.float64)
    critic = lambda x: (x.reshape(x.shape[0], -1) * w).sum(-1)  # noqa: E731
    gp = gradient_penalty(critic, torch.randn(3, 1, 2, 2, dtype=torch.float64), torch.randn(3, 1, 2, 2,
                                                                                          dtype=torch.float64))
    torch.testing.assert_close(gp, (w.norm() - 1) ** 2)


def test_loss_formulas():
    a = torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64)
    b = torch.tensor([1.0, -0.5], dtype=torch.float64)
    sig = torch.sigmoid
    torch.testing.assert_close(discriminator_loss(a, b), -sig(a).log().mean() - (1 - sig(b)).log().mean())
    torch.testing.assert_close(nonsaturating_generator_loss(b), -sig(b).log().mean())
    torch.testing.assert_close(wasserstein_critic_loss(a, b), b.mean() - a.mean())


def test_nonsaturating_loss_on_fixed_discriminator():
    # GAN.loss(x) is -mean log σ(D(G(z))) for fresh z ~ N(0, I): recompute z from the same seed
    gan = GAN(2, **SMALL).double()
    x = torch.randn(6, 2, dtype=torch.float64)
    torch.manual_seed(11)
    loss = gan.loss(x)
    torch.manual_seed(11)
    z = torch.randn(6, 3, dtype=torch.float64)
    logits = gan.discriminator(gan.generator(z))
    torch.testing.assert_close(loss, -torch.sigmoid(logits).log().mean())
    # differentiable in the generator only through G
    loss.backward()
    assert all(p.grad is not None for p in gan.generator.parameters())


def test_wgan_loss_is_minus_mean_critic():
    wgan = WGANGP(2, **SMALL).double()
    x = torch.randn(6, 2, dtype=torch.float64)
    torch.manual_seed(3)
    loss = wgan.loss(x)
    torch.manual_seed(3)
    z = torch.randn(6, 3, dtype=torch.float64)
    torch.testing.assert_close(loss, -wgan.critic(wgan.generator(z)).mean())


# ------------------------------------------------------------------------------------------------
# the generator as a Pyro program


@pytest.mark.parametrize("cls", MODELS)
def test_sample_runs_the_pyro_program(cls):
    model = cls(2, **SMALL)
    trace = poutine.trace(model.model).get_trace(5)
    assert trace.nodes["z"]["value"].shape == (5, 3)
    assert trace.nodes["z"]["fn"].event_shape == (3,)
    x = trace.nodes["x"]["value"]
    torch.testing.assert_close(x, model.generator(trace.nodes["z"]["value"]))
    # sample(n) is that program: replaying the recorded z gives the sample drawn from the same seed
    pyro.set_rng_seed(4)
    a = model.sample(5)
    pyro.set_rng_seed(4)
    tr = poutine.trace(model.model).get_trace(5)
    torch.testing.assert_close(a, tr.nodes["x"]["value"])
    pyro.set_rng_seed(4)
    torch.testing.assert_close(model.sample(5), a)
    assert not a.requires_grad
    # conditioning z fixes x
    z = torch.zeros(4, 3)
    x0 = poutine.condition(model.model, data={"z": z})(4)
    torch.testing.assert_close(x0, model.generator(z).detach().expand(4, 2), check_stride=False)


def test_sample_shapes_images_and_dtype():
    gan = GAN((1, 3, 3), latent_dim=2, hidden=(8,)).double()
    x = gan.sample(4)
    assert x.shape == (4, 1, 3, 3) and x.dtype == torch.float64
    out = gan.training_step((torch.randn(8, 1, 3, 3, dtype=torch.float64),), gan.configure_optimizers(1e-3))
    assert math.isfinite(out["loss"])


def test_as_distribution_samples_but_has_no_log_prob():
    d = WGANGP(2, **SMALL).as_distribution()
    assert d.sample((3, 4)).shape == (3, 4, 2)
    with pytest.raises(NotImplementedError, match="no log_prob"):
        d.log_prob(torch.zeros(2))


# ------------------------------------------------------------------------------------------------
# training step


@pytest.mark.parametrize("cls", MODELS)
def test_training_step_updates_both_players(cls):
    model = cls(2, **SMALL)
    opts = model.configure_optimizers(1e-2)
    assert [o.defaults["betas"] for o in opts] == [model.betas] * 2
    assert model.betas == ((0.5, 0.999) if cls is GAN else (0.0, 0.9))
    g0 = [p.detach().clone() for p in model.generator.parameters()]
    d0 = [p.detach().clone() for p in model.discriminator.parameters()]
    out = model.training_step((torch.randn(20, 2),), opts)
    assert all(not torch.equal(a, b) for a, b in zip(g0, model.generator.parameters()))
    # every weight matrix moves (the critic's output bias has zero gradient in WGAN: E f(x) - E f(x̃) and the
    # penalty are invariant to it, so biases are not checked)
    moved = [not torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters()) if a.dim() == 2]
    assert moved and all(moved)
    expected = {"loss", "d_loss", "g_loss", "grad_norm_d", "grad_norm_g", "diversity"}
    expected |= {"d_acc"} if cls is GAN else {"gp", "wasserstein_estimate"}
    assert set(out) == expected
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    assert out["grad_norm_d"] > 0 and out["grad_norm_g"] > 0
    assert out["loss"] == (out["g_loss"] if cls is GAN else out["d_loss"])
    if cls is GAN:
        assert 0.0 <= out["d_acc"] <= 1.0
    else:
        # d_loss = -W + λ gp, each averaged over the n_critic updates
        assert out["d_loss"] == pytest.approx(-out["wasserstein_estimate"] + 10.0 * out["gp"], rel=1e-5, abs=1e-6)


def test_wgan_without_penalty_still_reports_it():
    wgan = WGANGP(2, **SMALL, gp_weight=0.0, n_critic=2)
    out = wgan.training_step((torch.randn(16, 2),), wgan.configure_optimizers(1e-3))
    assert out["d_loss"] == pytest.approx(-out["wasserstein_estimate"], rel=1e-6, abs=1e-7)
    assert out["gp"] > 0.0  # measured for monitoring: a random MLP critic is not exactly 1-Lipschitz


def test_wgan_critic_updates_use_split_batches():
    # n_critic=4, batch 12, split: the critic sees parts of 3 rows; count its calls on real rows
    wgan = WGANGP(2, latent_dim=2, hidden=(8,), n_critic=4, batch_mode="split")
    seen = []
    wgan.discriminator.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]))
    wgan.training_step((torch.randn(12, 2),), wgan.configure_optimizers(1e-3))
    # per critic update: real, fake and interpolates (3 rows each); then the generator update (12 rows)
    assert seen == [3, 3, 3] * 4 + [12]
    reuse = WGANGP(2, latent_dim=2, hidden=(8,), n_critic=2)  # default: reuse
    seen.clear()
    reuse.discriminator.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]))
    reuse.training_step((torch.randn(12, 2),), reuse.configure_optimizers(1e-3))
    assert seen == [12, 12, 12] * 2 + [12]


def test_discriminator_accuracy_on_perfect_discriminator():
    # a discriminator saying "real" exactly on x_1 > 50 (data there, generator near 0) has accuracy 1
    class Far(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(1.0))

        def forward(self, x):
            return self.scale * (x[:, 0] - 50.0)

    gan = GAN(2, latent_dim=2, hidden=(8,), discriminator=Far())
    real = torch.full((16, 2), 100.0)
    out = gan.training_step((real,), gan.configure_optimizers(1e-4))
    assert out["d_acc"] == 1.0
    # the non-saturating loss stays informative: -log σ(D(G(z))) ≈ 50, not ≈ 0 as log(1 - σ) would be
    assert out["g_loss"] > 40


def test_sample_diversity_detects_collapse():
    # the 8gaussians data against itself: 1; against one of its modes: about σ·E|N(0,I₂)diff| / E|x - x'|
    x = pg.data.toy2d("8gaussians", 2000, seed=0).float()
    y = pg.data.toy2d("8gaussians", 2000, seed=1).float()
    assert sample_diversity(y, x).item() == pytest.approx(1.0, abs=0.05)  # MC error of two means of 2e6 pairs
    mode = x[(x[:, 0] > 2) & (x[:, 1].abs() < 1)]
    assert sample_diversity(mode, x).item() < 0.2


def test_mode_coverage_counts():
    c = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    s = torch.tensor([[0.2, 0.1], [4.1, 0.0], [3.9, 0.3], [10.0, 10.0]])
    per, off = mode_coverage(s, c, radius=0.5)
    assert per.tolist() == [0.25, 0.5, 0.0] and off.item() == 0.25


# ------------------------------------------------------------------------------------------------
# fit and checkpoints


@pytest.mark.parametrize("cls", MODELS)
def test_fit_records_metrics(cls):
    data = pg.data.toy2d("8gaussians", 256, seed=0).float()
    model = cls(2, **SMALL)
    h = pg.fit(model, data, steps=3, batch_size=64, lr=1e-3, seed=0, progress=False)
    assert h.steps_done == 3 and len(h.losses) == 3
    names = {"d_loss", "g_loss", "grad_norm_d", "grad_norm_g", "diversity"}
    names |= {"d_acc"} if cls is GAN else {"gp", "wasserstein_estimate"}
    assert names <= set(h.metrics) and all(len(h.metrics[k]) == 3 for k in names)
    # same seed and same initial weights, same run
    m1, m2 = cls(2, **SMALL), cls(2, **SMALL)
    m2.load_state_dict(m1.state_dict())
    h1 = pg.fit(m1, data, steps=2, batch_size=64, seed=5, progress=False)
    h2 = pg.fit(m2, data, steps=2, batch_size=64, seed=5, progress=False)
    assert h1.losses == h2.losses


@pytest.mark.parametrize("cls", MODELS)
def test_checkpoint_round_trip(cls, tmp_path):
    kw = dict(latent_dim=3, hidden=(16, 8), activation="silu", batch_mode="split")
    kw.update({"d_steps": 2} if cls is GAN else {"n_critic": 3, "gp_weight": 5.0})
    model = cls((2,), **kw)
    path = pg.save(tmp_path / "m.pt", model)
    back = pg.load(path)
    assert type(back) is cls and back.config() == model.config()
    assert back.config()["betas"] == list(model.betas) and back.batch_mode == "split"
    for a, b in zip(model.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)
    pyro.set_rng_seed(1)
    s1 = model.sample(4)
    pyro.set_rng_seed(1)
    torch.testing.assert_close(back.sample(4), s1)


def test_config_refuses_custom_networks():
    gan = GAN(2, latent_dim=2, generator=nn.Linear(2, 2))
    with pytest.raises(TypeError, match="custom generator"):
        gan.config()


# ------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(latent_dim=0), ValueError, "latent_dim must be >= 1"),
        (dict(hidden="big"), TypeError, "hidden must be a sequence"),
        (dict(activation="gelu"), ValueError, "unknown activation 'gelu'; valid choices"),
        (dict(betas=(0.5,)), TypeError, "betas must be a pair"),
        (dict(betas=(0.5, 1.0)), ValueError, r"betas\[1\] must lie in \[0, 1\)"),
        (dict(batch_mode="chunk"), ValueError, "unknown batch_mode 'chunk'; valid choices: 'reuse', 'split'"),
        (dict(d_steps=0), ValueError, "d_steps must be >= 1"),
        (dict(generator="mlp"), TypeError, "generator must be a torch.nn.Module"),
        (dict(generator=nn.Linear(8, 3)), ValueError, r"generator returned shape \(2, 3\); expected \(2, 2\)"),
        (dict(discriminator=nn.Linear(2, 2)), ValueError, r"discriminator must return shape \(batch,\)"),
        (dict(unknown=1), TypeError, "unexpected keyword argument 'unknown'"),
    ],
)
def test_gan_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        GAN(2, **kwargs)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((0,), {}, ValueError, r"event_shape\[0\] must be >= 1"),
        (("2",), {}, TypeError, "event_shape must be a dimension"),
        ((2,), dict(gp_weight=-1.0), ValueError, "gp_weight must be >= 0"),
        ((2,), dict(n_critic=1.5), TypeError, "n_critic must be an integer"),
        ((2,), dict(d_steps=2), TypeError, "unexpected keyword argument 'd_steps'"),
    ],
)
def test_wgan_argument_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        WGANGP(*args, **kwargs)


def test_call_errors():
    wgan = WGANGP(2, **SMALL, n_critic=5, batch_mode="split")
    opts = wgan.configure_optimizers(1e-3)
    with pytest.raises(ValueError, match=r"batch needs >= 10 rows, got 6; raise batch_size or use batch_mode='reuse'"):
        wgan.training_step((torch.randn(6, 2),), opts)
    with pytest.raises(TypeError, match=r"optimizers must be the list \[discriminator_optimizer"):
        wgan.training_step((torch.randn(20, 2),), opts[:1])
    with pytest.raises(ValueError, match=r"batch\[0\] must have shape \(batch, 2\), got \(20, 3\)"):
        wgan.training_step((torch.randn(20, 3),), opts)
    with pytest.raises(TypeError, match="x is torch.float64 but the model is torch.float32"):
        wgan.loss(torch.randn(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        wgan.sample(0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        wgan.configure_optimizers(0.0)
    with pytest.raises(ValueError, match="real and fake must have the same shape"):
        gradient_penalty(wgan.critic, torch.randn(3, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="eps must lie in"):
        gradient_penalty(wgan.critic, torch.randn(3, 2), torch.randn(3, 2), eps=torch.full((3,), 2.0))
    with pytest.raises(ValueError, match="radius must be > 0"):
        mode_coverage(torch.randn(3, 2), torch.zeros(1, 2), radius=0)


# ------------------------------------------------------------------------------------------------
# acceptance (slow)


def _gauss8_centers():
    angle = torch.arange(8, dtype=torch.float32) * (math.pi / 4)
    return 2 * math.sqrt(2) * torch.stack([angle.cos(), angle.sin()], 1)


@pytest.mark.slow
def test_wgan_gp_covers_all_eight_modes():
    # 8gaussians: component std σ = 1/(2√2); a mode is covered when >= 2% of 4000 samples fall within 3σ of it.
    # A mode with its fair share 1/8 has a binomial count standard error sqrt(0.125·0.875/4000) ≈ 0.005, so
    # 0.02 is ~20 standard errors below a covered mode: the threshold separates covered from missing modes.
    ds = pg.data.load_dataset("8gaussians", n_train=20_000, n_test=4_000)
    model = WGANGP(2)
    pg.fit(model, ds.train, steps=1000, batch_size=256, lr=1e-3, seed=0, progress=False)
    pyro.set_rng_seed(1)
    per, off = mode_coverage(model.sample(4000), _gauss8_centers(), radius=3 * 0.5 / math.sqrt(2))
    assert bool((per >= 0.02).all()), per
    assert off.item() < 0.15
