"""ScoreSDE: the score and its parameterisations, exact log_prob against closed forms, the Pyro
distribution, config/checkpoint round trips, EMA, sampling shapes, a short training run and errors.

Closed-form model: for data ``N(μ, s0² I)`` under the VP SDE the marginals are
``p_t = N(α μ, (α² s0² + σ²) I)``; a hand-written "network" returning the exact noise
``ε̂ = σ (x - α μ) / v_t`` makes ``ScoreSDE`` exact, so ``log_prob`` must equal ``log N(x; α(ε) μ, v_ε)``.
"""

from __future__ import annotations

import json
import math

import pyro
import pytest
import torch
from torch import nn

import probgen as pg
from probgen.diffusion import ScoreSDE
from probgen.sde import VESDE, VPSDE

MU = torch.tensor([0.5, -1.0], dtype=torch.float64)
S0 = 0.7


class ExactNoise(nn.Module):
    """ε̂(x, t) = σ(t) (x - α(t) μ) / (α² s0² + σ²): the exact noise predictor for N(μ, s0² I) data."""

    def __init__(self, sde):
        super().__init__()
        self.sde = sde
        self.dummy = nn.Parameter(torch.zeros((), dtype=torch.float64))  # gives the model a device/dtype

    def forward(self, x, t):
        a = self.sde.marginal_scale(t)[:, None]
        s = self.sde.marginal_std(t)[:, None]
        return s * (x - a * MU) / (a**2 * S0**2 + s**2) + 0 * self.dummy


def _small(**kw):
    kw.setdefault("net_options", {"hidden": [16, 16], "embed_dim": 8})
    return ScoreSDE((2,), **kw)


def _gaussian_log_prob(x, mean, var):
    return -0.5 * (((x - mean) ** 2).sum(-1) / var + x.shape[-1] * math.log(2 * math.pi * var))


# --------------------------------------------------------------------------------------------- score
def test_noise_parameterization_score_is_minus_eps_over_sigma():
    torch.manual_seed(0)
    model = _small()
    nn.init.normal_(model.net.out.weight)  # the default zero-initialised last layer would make this trivial
    x, t = torch.randn(5, 2), torch.rand(5) * 0.9 + 0.05
    expected = -model.net(x, t) / model.sde.marginal_std(t)[:, None]
    torch.testing.assert_close(model.score(x, t), expected)
    score_model = _small(parameterization="score")
    torch.testing.assert_close(score_model.score(x, t), score_model.net(x, t))


def test_score_shapes_and_scalar_time():
    model = _small()
    x = torch.randn(4, 2)
    assert model.score(x, 0.5).shape == (4, 2)
    torch.testing.assert_close(model.score(x, 0.5), model.score(x, torch.full((4,), 0.5)))
    image = ScoreSDE((1, 8, 8), net_options={"base_channels": 8, "channel_mults": [1], "embed_dim": 8})
    assert image.score(torch.randn(3, 1, 8, 8), torch.rand(3) + 0.01).shape == (3, 1, 8, 8)
    assert image.loss(torch.randn(3, 1, 8, 8)).shape == ()


def test_score_validation():
    model = _small()
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2\), got \(4, 3\)"):
        model.score(torch.randn(4, 3), 0.5)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        model.score(torch.randn(4, 2), torch.full((4,), 1.5))
    with pytest.raises(ValueError, match=r"t must have shape \(4,\)"):
        model.score(torch.randn(4, 2), torch.rand(3))
    with pytest.raises(ValueError, match="t must be > 0 with parameterization='noise'"):
        model.score(torch.randn(4, 2), 0.0)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2\)"):
        model.loss(torch.randn(4, 2, 1))


# --------------------------------------------------------------------------------------------- likelihood
def _exact_marginal(sde, t):
    a = float(sde.marginal_scale(torch.tensor([t], dtype=torch.float64)))
    return a * MU, a**2 * S0**2 + 1 - a**2


def test_log_prob_of_exact_model_is_the_gaussian_density():
    sde = VPSDE()
    model = ScoreSDE((2,), sde, ExactNoise(sde), eps=1e-3)
    x = MU + S0 * torch.randn(6, 2, dtype=torch.float64)
    expected = _gaussian_log_prob(x, *_exact_marginal(sde, 1e-3))
    # with the exact p_T at t = T the only error is the solver's (rtol = atol = 1e-5)
    exact_prior = {"prior_log_prob": lambda z: _gaussian_log_prob(z, *_exact_marginal(sde, 1.0))}
    torch.testing.assert_close(model.log_prob(x, **exact_prior), expected, rtol=0, atol=1e-4)
    # the default N(0, I) prior adds log N(x_T; 0, I) - log p_T(x_T), here |.| < 0.05 (α(1) ≈ 0.0066)
    torch.testing.assert_close(model.log_prob(x), expected, rtol=0, atol=0.05)
    # chunks, and the Hutchinson estimator (exact here: the Jacobian is a multiple of I, and Rademacher
    # probes give vᵀ(cI)v = c D)
    # (chunks change the adaptive steps: agreement to the solver tolerance)
    torch.testing.assert_close(model.log_prob(x, batch_size=4), model.log_prob(x), rtol=0, atol=1e-4)
    torch.testing.assert_close(model.log_prob(x, trace="hutchinson", **exact_prior), expected, rtol=0, atol=1e-4)


def test_bits_per_dim_is_the_dequantized_log_prob():
    sde = VPSDE()
    model = ScoreSDE((2,), sde, ExactNoise(sde), eps=1e-3)
    levels = torch.tensor([[0, 16], [8, 3], [5, 5]])
    x = -1.0 + 2.0 * levels.double() / 16  # the scaling of probgen.data.digits
    bpd = model.bits_per_dim(x, num_levels=17, data_range=(-1.0, 1.0), generator=torch.Generator().manual_seed(0))
    y = pg.data.dequantize(levels.double(), 17, generator=torch.Generator().manual_seed(0))
    lp = model.log_prob(-1.0 + 2.0 * y)
    expected = -(lp + 2 * math.log(2.0 / 17)) / (2 * math.log(2.0))
    torch.testing.assert_close(bpd, expected)


def test_as_distribution_inside_a_pyro_model():
    sde = VPSDE()
    model = ScoreSDE((2,), sde, ExactNoise(sde), eps=1e-3)
    x = MU + S0 * torch.randn(3, 2, dtype=torch.float64)

    def program():
        return pyro.sample("x", model.as_distribution(), obs=x)

    trace = pyro.poutine.trace(program).get_trace()
    trace.compute_log_prob()
    torch.testing.assert_close(trace.nodes["x"]["log_prob"], model.log_prob(x))
    draw = model.as_distribution(method="pc", steps=10).sample((4,))
    assert draw.shape == (4, 2) and draw.dtype == torch.float64


# --------------------------------------------------------------------------------------------- config, EMA
@pytest.mark.parametrize("kwargs", [
    {},
    {"sde": VESDE(sigma_min=0.02, sigma_max=10.0), "parameterization": "score", "ema_decay": 0.99},
    {"sde": {"name": "subvp", "beta_min": 0.2, "beta_max": 10.0}, "loss_weighting": "likelihood",
     "importance_sampling": True, "eps": 1e-4},
    {"data_range": (0.0, 1.0)},
])
def test_config_round_trip(kwargs, tmp_path):
    torch.manual_seed(0)
    model = _small(**kwargs)
    nn.init.normal_(model.net.out.weight)
    config = model.config()
    assert json.loads(json.dumps(config)) == config
    clone = ScoreSDE(**config)
    clone.load_state_dict(model.state_dict())
    x, t = torch.randn(4, 2), torch.rand(4) * 0.9 + 0.05
    torch.testing.assert_close(clone.score(x, t), model.score(x, t), rtol=0, atol=0)
    pg.checkpoint.save(tmp_path / "m.pt", model)
    loaded = pg.load(tmp_path / "m.pt")
    assert type(loaded) is ScoreSDE and loaded.config() == config
    torch.testing.assert_close(loaded.score(x, t), model.score(x, t), rtol=0, atol=0)


def test_custom_net_config_is_refused_with_a_pointer_to_load():
    sde = VPSDE()
    model = ScoreSDE((2,), sde, ExactNoise(sde))
    with pytest.raises(ValueError, match=r"custom net \(ExactNoise\).*probgen.load\(path, model="):
        model.config()


def test_ema_update_and_use():
    torch.manual_seed(0)
    model = _small(ema_decay=0.9)
    assert not any(p.requires_grad for p in model.ema_net.parameters())
    x, t = torch.randn(4, 2), torch.full((4,), 0.5)
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.ema_net.parameters()]
    model.on_fit_step(1)  # first update: warm-up decay min(0.9, 1/10) = 0.1
    for e, b, p in zip(model.ema_net.parameters(), before, model.net.parameters()):
        torch.testing.assert_close(e, 0.1 * b + 0.9 * p)
    assert int(model.ema_updates) == 1
    torch.testing.assert_close(model.score(x, t), model._score(x, t, model.ema_net))
    torch.testing.assert_close(model.score(x, t, use_ema=False), model._score(x, t, model.net))
    with pytest.raises(ValueError, match="use_ema=True but this model keeps no EMA weights"):
        _small().score(x, t, use_ema=True)


# --------------------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("method, opts", [
    ("sde", {"steps": 20}),
    ("pc", {"steps": 10}),
    ("ode", {"solver": "rk4", "steps": 10}),
])
def test_sample_shapes_and_nfe(method, opts):
    torch.manual_seed(0)
    model = _small()
    nn.init.normal_(model.net.out.weight, std=0.1)  # an untrained zero score makes the Langevin corrector's step 0/0
    samples, nfe = model.sample(7, method=method, return_nfe=True, generator=torch.Generator().manual_seed(0), **opts)
    assert samples.shape == (7, 2) and bool(torch.isfinite(samples).all())
    assert nfe >= opts["steps"]
    again = model.sample(7, method=method, generator=torch.Generator().manual_seed(0), **opts)
    torch.testing.assert_close(again, samples)


def test_annealed_langevin_for_ve_only():
    model = _small(sde=VESDE(sigma_min=0.01, sigma_max=5.0))
    samples = model.sample(5, method="annealed-langevin", steps=4, steps_per_level=3)
    assert samples.shape == (5, 2)
    with pytest.raises(ValueError, match="method='annealed-langevin' needs .* a VESDE; this model's SDE is VPSDE"):
        _small().sample(5, method="annealed-langevin")


# --------------------------------------------------------------------------------------------- training
def test_initial_loss_is_half_the_dimension_and_training_reduces_it():
    # zero-initialised last layer: ε̂ = 0, so the σ²-weighted loss is ½ (T - eps) E|z|² = ½ D (T - eps) exactly
    # in expectation; per-example ½|z|² has SD sqrt(D/2) = 1, so with N = 4096 the SE is 1/64 (4 SE = 0.0625).
    data = pg.data.toy2d("8gaussians", 4096, seed=0).float()
    model = _small(net_options={"hidden": [64, 64], "embed_dim": 16})
    torch.manual_seed(1)
    with torch.no_grad():
        before = float(model.loss(data))
    assert abs(before - 1.0) < 0.0625
    pg.fit(model, data, steps=300, batch_size=256, lr=3e-3, seed=0, progress=False)
    torch.manual_seed(1)
    with torch.no_grad():
        after = float(model.loss(data))
    assert after < 0.8 * before, (before, after)


# --------------------------------------------------------------------------------------------- errors
def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown parameterization 'eps'; valid choices: 'noise', 'score'"):
        ScoreSDE((2,), parameterization="eps")
    with pytest.raises(ValueError, match="unknown loss_weighting 'ml'; valid choices: 'sigma2', 'likelihood'"):
        ScoreSDE((2,), loss_weighting="ml")
    with pytest.raises(ValueError, match="importance_sampling=True is for loss_weighting='likelihood'"):
        ScoreSDE((2,), importance_sampling=True)
    with pytest.raises(ValueError, match=r"event_shape\[0\] must be >= 1, got 0"):
        ScoreSDE((0,))
    with pytest.raises(ValueError, match=r"no default network for event_shape \(3, 5, 7\)"):
        ScoreSDE((3, 5, 7))
    with pytest.raises(ValueError, match="unknown sde name 'vpp'; valid choices: 'vp', 'subvp', 've'"):
        ScoreSDE((2,), sde={"name": "vpp"})
    with pytest.raises(ValueError, match="net_options configure the default network"):
        ScoreSDE((2,), net=nn.Linear(2, 2), net_options={"hidden": [8]})
    with pytest.raises(TypeError, match=r"net_options \['depth'\] do not fit ConditionedMLP"):
        ScoreSDE((2,), net_options={"depth": 3})
    with pytest.raises(ValueError, match="ema_decay must lie in"):
        ScoreSDE((2,), ema_decay=1.0)
    model = _small()
    with pytest.raises(ValueError, match="unknown method 'ddim'; valid choices: 'sde', 'pc', 'ode', 'annealed-langevin'"):
        model.sample(2, method="ddim")
    with pytest.raises(ValueError, match="unknown trace 'approx'; valid choices: 'exact', 'hutchinson'"):
        model.log_prob(torch.randn(2, 2), trace="approx")
    with pytest.raises(ValueError, match="solver applies to method='sde' or 'ode'"):
        model.sample(2, method="pc", solver="rk4")
    with pytest.raises(ValueError, match="config.. cannot describe a callable loss_weighting"):
        _small(loss_weighting=lambda t: torch.ones_like(t)).config()
    with pytest.raises(ValueError, match=r"data_range must be None or \(low, high\) with low < high, got \(1, 0\)"):
        ScoreSDE((2,), data_range=(1, 0))
    with pytest.raises(ValueError, match="clip_x0 must be None or"):
        model.sample(2, method="euler", clip_x0=(1.0,))


def test_clip_x0_clamps_the_denoiser_of_every_method():
    # a score far too large (an untrained network at high noise): each method ends inside the clamp range,
    # which binds (the unclamped draw leaves it); the clamped denoiser is the model's one, clamped
    class FarNoise(ExactNoise):  # the exact noise of N(40 μ, s0² I) data, far outside [-1, 1]
        def forward(self, x, t):
            return super().forward(x - (self.sde.marginal_scale(t)[:, None] * 39 * MU).to(x), t)

    model = ScoreSDE((2,), net=FarNoise(VPSDE()), data_range=(-1.0, 1.0))
    x, sigma = torch.randn(3, 2, dtype=torch.float64) * 30, torch.full((3,), 2.0, dtype=torch.float64)
    torch.testing.assert_close(model.denoiser(clip_x0=(-0.5, 0.5))(x, sigma), model.denoiser()(x, sigma).clamp(-0.5, 0.5))
    for opts in ({"method": "dpm++2m", "steps": 6}, {"method": "euler", "steps": 6}, {"method": "sde", "steps": 8},
                 {"method": "pc", "steps": 4}, {"method": "ode", "denoise": True}, {"method": "ode", "solver": "euler", "steps": 6, "denoise": True}):
        out = model.sample(64, clip_x0=(-1.0, 1.0), generator=torch.Generator().manual_seed(1), **opts)
        assert float(out.abs().max()) <= 1.0 + 1e-6, opts
        assert float(model.sample(64, generator=torch.Generator().manual_seed(1), **opts).abs().max()) > 2.0, opts


# --------------------------------------------------------------------------------------------- acceptance
@pytest.mark.slow
def test_8gaussians_nll_within_015_nats_of_the_entropy():
    # the recipe of docs/score_sde.md (examples/score_sde_likelihood.py); measured gaps 0.04-0.06 ± 0.02 nats,
    # so the 0.15 bound sits ~4 SE above it
    data = pg.data.load_dataset("8gaussians")
    model = ScoreSDE((2,), loss_weighting="likelihood", importance_sampling=True, ema_decay=0.999,
                     net_options={"hidden": [128, 128, 128]})
    pg.fit(model, data.train, steps=8000, batch_size=512, lr=1e-3, seed=0, lr_schedule="cosine", progress=False)
    log_prob = model.log_prob(data.test[:2000])
    entropy, _ = data.entropy
    assert float(-log_prob.mean()) - entropy < 0.15


def test_dtype_mismatch_is_reported():
    model = _small()
    with pytest.raises(TypeError, match="x is torch.float64 on cpu but the model's weights are torch.float32 on cpu"):
        model.score(torch.randn(2, 2, dtype=torch.float64), 0.5)


def test_sample_in_chunks_bounds_memory_and_keeps_the_draws():
    """batch_size splits the draw; with the same generator stream the chunks are the same samples."""
    torch.manual_seed(0)
    model = ScoreSDE((2,))
    whole = model.sample(10, method="ode", generator=torch.Generator().manual_seed(3), rtol=1e-3, atol=1e-3)
    parts, nfe = model.sample(10, method="ode", batch_size=4, return_nfe=True,
                              generator=torch.Generator().manual_seed(3), rtol=1e-3, atol=1e-3)
    assert parts.shape == whole.shape == (10, 2) and nfe > 0
    # the ODE is deterministic given its prior draw: chunk k reuses the generator's next block of noise
    g = torch.Generator().manual_seed(3)
    firsts = model.sample(4, method="ode", generator=g, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(parts[:4], firsts)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        model.sample(10, batch_size=0)
