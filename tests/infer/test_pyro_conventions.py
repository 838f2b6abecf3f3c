"""Behaviours that must match Pyro's (issue 16): shapes of ModelDistribution, MADE's discrete support,
the kernels' adapted step size and preconditioner after a run, null models, validation while sampling,
and the batched HMC's jittered trajectories."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.mcmc.util import initialize_model

from probgen.flows.made import MADE
from probgen.infer import MALA, ULA, model_potential, run_chains
from probgen.protocol import ModelDistribution

F64 = torch.float64


class _StdNormal:
    """N(0, I) in R^2, a model with an exact log_prob for ModelDistribution."""

    def sample(self, n: int) -> torch.Tensor:
        return torch.randn(n, 2)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * (x**2).sum(-1) - math.log(2 * math.pi)


def test_expanded_model_distribution_log_prob_broadcasts_like_pyro():
    """expand([3]).log_prob(one event) has shape (3,), the same as Normal.to_event(1).expand([3])."""
    ref = dist.Normal(torch.zeros(2), 1.0).to_event(1).expand([3])
    mine = ModelDistribution(_StdNormal(), (2,)).expand([3])
    one = torch.tensor([0.3, -0.2])
    assert mine.log_prob(one).shape == ref.log_prob(one).shape == (3,)
    torch.testing.assert_close(mine.log_prob(one), ref.log_prob(one))
    many = torch.randn(4, 3, 2)
    torch.testing.assert_close(mine.log_prob(many), ref.log_prob(many))
    # inside a plate, as Pyro builds it
    with pyro.plate("p", 3):
        tr = pyro.poutine.trace(lambda: pyro.sample("x", mine, obs=one)).get_trace()
    assert tr.nodes["x"]["fn"].log_prob(one).shape == (3,)


def test_expanded_as_distribution_of_real_models_has_the_batch_shape():
    """The same contract through the families' own as_distribution (a flow, MADE)."""
    from probgen.flows import Flow

    flow = Flow(2, "realnvp")
    d = flow.as_distribution().expand([3])
    one = torch.tensor([0.1, -0.4])
    lp = d.log_prob(one)
    assert lp.shape == (3,)
    with torch.no_grad():
        torch.testing.assert_close(lp, flow.log_prob(one[None]).expand(3))
    made = MADE(4, hidden=[8])
    bits = torch.tensor([0.0, 1.0, 1.0, 0.0])
    assert made.as_distribution().expand([2, 3]).log_prob(bits).shape == (2, 3)


def test_made_declares_a_binary_support_and_nuts_refuses_it_as_discrete():
    made = MADE(4, hidden=[8])
    d = made.as_distribution()
    assert d.support.is_discrete and d.support.event_dim == 1
    assert bool(d.support.check(torch.tensor([0.0, 1.0, 1.0, 0.0])))
    assert not bool(d.support.check(torch.tensor([0.0, 0.5, 1.0, 0.0])))

    def model():
        pyro.sample("x", made.as_distribution())

    with pytest.raises(ValueError, match="Continuous inference cannot handle discrete sample site 'x'"):
        MCMC(NUTS(model), num_samples=2, warmup_steps=2, disable_progbar=True).run()


def _normal_model():
    pyro.sample("mu", dist.Normal(torch.zeros((), dtype=F64), 0.1))


@pytest.mark.parametrize("mass", [False, True])
def test_mala_keeps_adapted_step_size_and_mass_matrix_after_run(mass):
    """After MCMC(...).run() the kernel holds the adapted values, as Pyro's HMC does (sd 0.1: without
    preconditioning the tuned step size is far below the initial 1; with it the estimated variance is
    near 0.01 and the step size, in whitened units, of order 1 but not the initial value)."""
    pyro.set_rng_seed(0)
    kernel = MALA(_normal_model, step_size=1.0, adapt_mass_matrix=mass)
    assert kernel.step_size == 1.0 and kernel.inverse_mass_matrix is None
    MCMC(kernel, num_samples=20, warmup_steps=200, disable_progbar=True).run()
    assert kernel.step_size != 1.0
    assert (0.3 < kernel.step_size < 5.0) if mass else (kernel.step_size < 0.2)
    inv_mass = kernel.inverse_mass_matrix
    assert isinstance(inv_mass, torch.Tensor) and inv_mass.shape == (1,)
    if mass:
        assert 0.002 < float(inv_mass) < 0.05
    else:
        assert float(inv_mass) == 1.0


def _null_model():
    pyro.sample("y", dist.Normal(0.0, 1.0), obs=torch.tensor(0.5))


@pytest.mark.parametrize("kernel_cls", [MALA, ULA])
def test_null_model_returns_empty_draws_like_pyro_hmc(kernel_cls):
    """A model without latent sites: {} per draw, with model= and with potential_fn= (Pyro's
    test_null_model_with_hook)."""
    mcmc = MCMC(kernel_cls(_null_model), num_samples=5, warmup_steps=3, disable_progbar=True)
    mcmc.run()
    assert mcmc.get_samples() == {}

    init, potential_fn, transforms, _ = initialize_model(_null_model)
    assert init == {}
    iters = []
    mcmc = MCMC(kernel_cls(potential_fn=potential_fn, transforms=transforms), num_samples=5, warmup_steps=3,
                initial_params=init, disable_progbar=True, hook_fn=lambda k, s, stage, i: iters.append(stage))
    mcmc.run()
    assert mcmc.get_samples() == {}
    assert iters == ["Warmup"] * 3 + ["Sample"] * 5


def test_run_chains_hmc_one_chain_leaving_the_support_does_not_kill_the_others():
    """A chain started in a steep corner jumps to a NaN scale; with Pyro's validation on, the batched
    potential must not raise (Pyro's MCMC disables validation while sampling): that proposal is
    rejected and the other chains go on."""

    y = torch.tensor([0.5, -0.3, 1.2], dtype=F64)

    def model():
        s = pyro.sample("s", dist.LogNormal(torch.zeros((), dtype=F64), 1.0))
        with pyro.plate("n", 3):
            pyro.sample("y", dist.Normal(0.0, s), obs=y)

    pot = model_potential(model)
    init = torch.zeros(8, 1, dtype=F64)
    init[0] = -40.0  # s = e^-40: U ~ 1e35 with a gradient that throws the leapfrog far out
    with pyro.validation_enabled(True):
        res = run_chains(pot, init, kernel="hmc", num_samples=20, warmup_steps=0, step_size=0.3,
                         num_leapfrog=5, adapt_mass_matrix=False, generator=torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(res.samples).all())
    assert bool(res.diverging[0].any())  # the bad chain's proposals are rejected as divergent
    assert float(res.accept_prob[1:].mean()) > 0.5  # the others move


def _lag1(x: torch.Tensor) -> float:
    """Lag-1 autocorrelation pooled over chains; x (C, S)."""
    c = x - x.mean()
    return float((c[:, 1:] * c[:, :-1]).mean() / (c**2).mean())


@pytest.mark.filterwarnings("ignore:More chains")
def test_batched_hmc_jitter_breaks_antithetic_draws():
    """On N(0, 1) with a trajectory of exactly pi (step 0.1 pi, 10 leapfrog steps) fixed HMC maps x to
    about -x (lag-1 autocorrelation of x near -1, of x^2 near +1, R-hat far above 1). With the default jitter
    each chain draws its number of steps k from {3..10} (= {ceil(L/4)..L}) every iteration, T = k pi / 10, so
    the autocorrelations are mean cos(T) = -0.345 and mean cos^2(T) = 0.430 for exact dynamics; with
    jitter=1 ({1..10}) -0.1 and 0.5 (SE ~ 0.01 with 400 x 200 draws). Jittering the step size by +-20 %
    (Stan's stepsize_jitter) leaves the draws antithetic: mean cos(T), T ~ U(0.8 pi, 1.2 pi), is -0.94."""
    from probgen.diagnostics import rhat

    U = lambda x: 0.5 * (x**2).sum(-1)  # noqa: E731
    init = torch.randn(400, 1, dtype=F64, generator=torch.Generator().manual_seed(1))
    kw = dict(kernel="hmc", num_samples=200, warmup_steps=0, step_size=0.1 * math.pi, num_leapfrog=10,
              adapt_step_size=False, adapt_mass_matrix=False)

    def run(**opts):
        return run_chains(U, init, generator=torch.Generator().manual_seed(2), **kw, **opts)

    fixed = run(jitter=0.0).samples[..., 0]
    assert _lag1(fixed) < -0.9 and _lag1(fixed**2) > 0.9 and float(rhat(fixed**2)) > 2.0
    res = run()
    x = res.samples[..., 0]
    assert -0.45 < _lag1(x) < -0.25  # leapfrog's discretisation moves both a little from the continuous values
    assert 0.33 < _lag1(x**2) < 0.53
    assert float(rhat(x)) < 1.02 and float(rhat(x**2)) < 1.02
    assert abs(float(x.var()) - 1.0) < 0.05
    assert int(res.diverging.sum()) == 0  # steps are never longer than h: no instability
    kw["num_samples"] = 100  # enough for the two other options' autocorrelations (SE ~ 0.015)
    full = run(jitter=1.0).samples[..., 0]
    assert abs(_lag1(full)) < 0.2 and 0.35 < _lag1(full**2) < 0.62
    step = run(jitter_kind="step_size").samples[..., 0]  # default +-20 %
    assert _lag1(step) < -0.85 and _lag1(step**2) > 0.8


def test_step_size_jitter_is_symmetric_around_the_adapted_step():
    """jitter_kind="step_size": the step is h u, u ~ U(1 - j, 1 + j) (Stan's stepsize_jitter), so its mean is h."""
    seen = []

    def kernel(potential_fn, state, step_size, inverse_mass_matrix, *, generator=None):
        from probgen.infer.transitions import mala_step

        seen.append(step_size.clone())
        return mala_step(potential_fn, state, step_size, inverse_mass_matrix, generator=generator)

    run_chains(lambda x: 0.5 * (x**2).sum(-1), torch.zeros(2000, 1, dtype=F64), kernel=kernel, num_samples=5,
               warmup_steps=0, step_size=0.5, adapt_step_size=False, jitter=0.4,
               generator=torch.Generator().manual_seed(0))
    h = torch.stack(seen) / 0.5  # (5, 2000) multipliers u
    assert float(h.min()) >= 0.6 and float(h.max()) <= 1.4
    assert abs(float(h.mean()) - 1.0) < 0.01  # SE = 0.4 / sqrt(3 * 10000) = 0.0023
    assert abs(float(h.var()) - 0.4**2 / 3) < 0.005


def test_hmc_step_with_per_chain_leapfrog_counts_equals_separate_runs():
    """hmc_step with num_leapfrog = (C,) counts: each chain ends where a run with its own count ends."""
    from probgen.infer.transitions import hmc_step, init_state

    U = lambda x: 0.5 * (x**2 * torch.arange(1.0, 4.0, dtype=F64)).sum(-1)  # noqa: E731
    x0 = torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    s = init_state(U, x0)
    h, A = torch.full((3,), 0.2, dtype=F64), torch.ones(3, dtype=F64)
    both = hmc_step(U, s, h, A, num_leapfrog=torch.tensor([1, 4, 7]), generator=torch.Generator().manual_seed(5))
    for c, n in enumerate([1, 4, 7]):
        one = hmc_step(U, s, h, A, num_leapfrog=n, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(both.energy_error[c], one.energy_error[c])
