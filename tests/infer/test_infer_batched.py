"""probgen.infer.run_chains: C chains in one tensor on a correlated 10-D Gaussian.

Tolerances come from Monte Carlo standard errors by batch means with the chains as batches: the C =
1000 chains are independent and start the sampling phase after warmup, so for any statistic f the
per-chain averages f̄_c are i.i.d. and SE(mean of f) = sd_c(f̄_c) / sqrt(C), which equals
sqrt(Var f / ESS) with the measured ESS = Var(f) / SE² (the "SE from the measured ESS", without
ArviZ's cost on 10^5 draws). Chains not fully stationary after warmup only inflate sd_c, so the SE
errs on the safe side; ArviZ's own ESS on short HMC chains came out 1.3-3x larger than this. f = x_i for the means, f = (x_i - m_i)(x_j - m_j) for the
covariances. With 10 means and 55 covariances checked at once we allow 4 SE (Bonferroni over 65
checks at total level ~0.4 % gives z = 3.8).
"""

from __future__ import annotations

import math

import pytest
import torch

from probgen.infer import ChainResult, run_chains
from probgen.infer.transitions import potential_and_grad

F64 = torch.float64
D = 10


def _gaussian() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(D, D, generator=g, dtype=F64)
    cov = a @ a.T / D + 0.3 * torch.eye(D, dtype=F64)
    scale = torch.logspace(-0.5, 0.5, D, dtype=F64)  # scales from 0.3 to 3: preconditioning matters
    cov = scale[:, None] * cov * scale[None, :]
    mean = torch.linspace(-2.0, 2.0, D, dtype=F64)
    return mean, cov


class _GaussianPotential:
    def __init__(self, mean: torch.Tensor, cov: torch.Tensor) -> None:
        self.mean, self.prec = mean, torch.linalg.inv(cov)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        d = x - self.mean
        return 0.5 * ((d @ self.prec) * d).sum(-1)


def _check_gaussian_moments(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, z: float = 4.0):
    """samples (C, S, D): sample mean and covariance within z batch-means SE of (mean, cov)."""
    num_chains = samples.shape[0]
    m_hat = samples.mean((0, 1))
    se_mean = samples.mean(1).std(0) / math.sqrt(num_chains)
    zs = (m_hat - mean).abs() / se_mean
    assert float(zs.max()) < z, zs

    centred = samples - m_hat
    prods = centred[..., :, None] * centred[..., None, :]  # (C, S, D, D)
    chain_cov = prods.mean(1)  # (C, D, D)
    c_hat = chain_cov.mean(0)
    se_cov = chain_cov.std(0) / math.sqrt(num_chains)
    zc = (c_hat - cov).abs() / se_cov
    assert float(zc.max()) < z, zc
    return samples.reshape(-1, D).var(0) / se_mean**2  # ESS of each mean: Var f / SE²


@pytest.mark.parametrize("kernel", ["mala", "hmc"])
def test_batched_recovers_gaussian_mean_and_covariance(kernel):
    mean, cov = _gaussian()
    init = torch.randn(1000, D, dtype=F64, generator=torch.Generator().manual_seed(1))
    res = run_chains(_GaussianPotential(mean, cov), init, kernel=kernel, num_samples=150, warmup_steps=250,
                     num_leapfrog=8, generator=torch.Generator().manual_seed(2))
    assert isinstance(res, ChainResult)
    assert res.samples.shape == (1000, 150, D) and res.samples.dtype == F64
    assert res.accept_prob.shape == (1000, 150) and res.diverging.dtype == torch.bool
    assert res.step_size.shape == (1000,)
    ess = _check_gaussian_moments(res.samples, mean, cov)
    assert float(ess.min()) > 5_000  # of 150,000 draws
    assert int(res.diverging.sum()) == 0
    target = 0.574 if kernel == "mala" else 0.8
    # dual averaging aims at the target, but the averaged step kept after warmup is a little smaller
    # (as in Stan, the realised acceptance ends above the target): allow +-0.2
    assert abs(float(res.acceptance_rate().mean()) - target) < 0.2
    # the pooled preconditioner is a warmup estimate of the marginal variances; chains started at
    # N(0, I) have not fully spread along the widest coordinate (variance ~ 26) by then: sanity check
    torch.testing.assert_close(res.inverse_mass_matrix, torch.diagonal(cov), rtol=0.3, atol=0)


def test_batched_ula_matches_its_biased_stationary_law():
    """ULA with a fixed diagonal preconditioner A: x' - mu = (I - hAP)(x - mu) + sqrt(2hA) xi, with
    P = Sigma^{-1}. Its stationary law is N(mu, S_h), S_h = (P - (h/2) P A P)^{-1} (whiten with
    A^{-1/2}: an AR(1) with symmetric matrix), the O(h) bias in closed form; test against it."""
    mean, cov = _gaussian()
    prec = torch.linalg.inv(cov)
    inv_mass = torch.diagonal(cov).clone()
    h = 0.1  # h * eig(A^{1/2} P A^{1/2}) in [0.04, 0.45]: stable, mixing in ~25 steps, bias up to 29 %
    s_h = torch.linalg.inv(prec - 0.5 * h * prec @ torch.diag(inv_mass) @ prec)
    assert float((torch.diagonal(s_h) / torch.diagonal(cov)).max()) > 1.05  # the bias is visible
    init = mean + inv_mass.sqrt() * torch.randn(1000, D, dtype=F64, generator=torch.Generator().manual_seed(1))
    res = run_chains(_GaussianPotential(mean, cov), init, kernel="ula", step_size=h, adapt_mass_matrix=False,
                     inverse_mass_matrix=inv_mass, num_samples=100, warmup_steps=300, thin=2,
                     generator=torch.Generator().manual_seed(3))
    assert res.samples.shape == (1000, 100, D)
    assert float(res.accept_prob.min()) == 1.0
    _check_gaussian_moments(res.samples, mean, s_h)
    with pytest.raises(AssertionError):  # the test has the power to see the bias
        _check_gaussian_moments(res.samples, mean, cov)


def test_batched_temperature_scales_covariance():
    """T = 3 on N(0, I): the target is N(0, 3 I)."""
    init = torch.zeros(2000, 2, dtype=F64)
    res = run_chains(lambda x: 0.5 * (x**2).sum(-1), init, kernel="mala", num_samples=20, warmup_steps=200,
                     temperature=3.0, generator=torch.Generator().manual_seed(0))
    # last draw of 2000 independent chains: var estimate has relative SE sqrt(2/2000) ≈ 0.032 -> 4 SE
    var = res.samples[:, -1].var(0)
    assert float((var / 3.0 - 1).abs().max()) < 4 * math.sqrt(2 / 2000)
    torch.testing.assert_close(res.potential[:, -1], 0.5 * (res.samples[:, -1] ** 2).sum(-1))


def test_batched_event_shape_thin_callback_and_reproducibility():
    calls = []
    init = torch.zeros(8, 2, 3)

    def potential(x):
        return 0.5 * (x**2).flatten(1).sum(-1)

    def run(seed):
        return run_chains(potential, init, kernel="hmc", num_samples=5, warmup_steps=25, thin=3,
                          num_leapfrog=3, callback=lambda i, s: calls.append((i, s.x.shape)),
                          generator=torch.Generator().manual_seed(seed))

    a = run(0)
    assert a.samples.shape == (8, 5, 2, 3) and a.samples.dtype == torch.float32
    assert a.inverse_mass_matrix.shape == (2, 3)
    assert [c[0] for c in calls] == list(range(25 + 15))
    assert all(c[1] == (8, 2, 3) for c in calls)
    b, c = run(0), run(1)
    torch.testing.assert_close(a.samples, b.samples)
    assert not torch.equal(a.samples, c.samples)


def test_batched_to_inference_data_and_summary():
    res = run_chains(lambda x: 0.5 * (x**2).sum(-1), torch.zeros(4, 3, dtype=F64), kernel="mala",
                     num_samples=50, warmup_steps=30, generator=torch.Generator().manual_seed(0))
    idata = res.to_inference_data(var_name="theta")
    assert dict(idata.posterior.sizes) == {"chain": 4, "draw": 50, "theta_dim_0": 3}
    assert idata.sample_stats["diverging"].dtype == bool
    assert idata.sample_stats["acceptance_rate"].shape == (4, 50)
    df = res.summary(var_name="theta")
    assert list(df.index) == ["theta[0]", "theta[1]", "theta[2]"]
    assert {"ess_bulk", "r_hat"} <= set(df.columns)


def test_divergences_are_flagged_and_rejected():
    """A huge fixed step on a stiff potential: MALA proposals explode, are rejected and flagged."""
    init = torch.ones(16, 2, dtype=F64)
    res = run_chains(lambda x: 50.0 * (x**4).sum(-1), init, kernel="mala", step_size=10.0,
                     adapt_step_size=False, adapt_mass_matrix=False, num_samples=5, warmup_steps=0)
    assert bool(res.diverging.all())
    assert bool((res.accept_prob == 0).all())
    torch.testing.assert_close(res.samples, init[:, None].expand(-1, 5, -1))


def test_potential_and_grad_matches_closed_form():
    x = torch.randn(5, 3, dtype=F64)
    u, g = potential_and_grad(lambda z: (z**3).sum(-1), x)
    torch.testing.assert_close(u, (x**3).sum(-1))
    torch.testing.assert_close(g, 3 * x**2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kernel": "gibbs"}, "unknown kernel 'gibbs'; valid choices: 'ula', 'mala', 'hmc', 'nuts', or a callable"),
        ({"kernel": "ula"}, "kernel 'ula' needs an explicit step_size"),
        ({"kernel": "ula", "step_size": 0.1, "adapt_step_size": True}, "adapt_step_size=True is not supported"),
        ({"step_size": -1.0}, "step_size must be > 0"),
        ({"step_size": torch.ones(3)}, r"step_size must be a positive number or a positive tensor of shape \(4,\)"),
        ({"thin": 0}, "thin must be >= 1"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"target_accept_prob": 1.5}, r"target_accept_prob must lie in \(0, 1\)"),
        ({"kernel": lambda *a, **k: None}, "target_accept_prob is required"),
        ({"inverse_mass_matrix": torch.ones(3)}, r"inverse_mass_matrix must be a positive tensor of shape \(2,\)"),
        ({"kernel": "hmc", "jitter_kind": "leapfrog"},
         "unknown jitter_kind 'leapfrog'; valid choices: 'trajectory', 'step_size'"),
        ({"kernel": "mala", "jitter_kind": "trajectory"}, "jitter_kind='trajectory' needs kernel 'hmc'"),
        ({"kernel": "hmc", "jitter": 1.5}, r"jitter must lie in \[0, 1\], got 1.5"),
        ({"kernel": "hmc", "jitter_kind": "step_size", "jitter": 1.0},
         r"jitter must lie in \[0, 1\) for jitter_kind='step_size'"),
        ({"kernel": "nuts", "jitter_kind": "trajectory"}, "jitter and jitter_kind are not used by kernel 'nuts'"),
    ],
)
def test_run_chains_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_chains(lambda x: (x**2).sum(-1), torch.zeros(4, 2), num_samples=3, warmup_steps=2, **kwargs)


def test_run_chains_bad_potential_and_init():
    with pytest.raises(ValueError, match=r"potential_fn must map x of shape \(4, 2\) to a tensor of shape \(4,\)"):
        run_chains(lambda x: x**2, torch.zeros(4, 2), num_samples=3)
    with pytest.raises(ValueError, match="not finite at init for 2 of 4 chains"):
        run_chains(lambda x: -torch.log(x).sum(-1), torch.tensor([[1.0], [-1.0], [2.0], [-3.0]]), num_samples=3)
    with pytest.raises(ValueError, match="init must have at least 2 dimensions"):
        run_chains(lambda x: x**2, torch.zeros(4), num_samples=3)


@pytest.mark.filterwarnings("ignore:More chains")
def test_model_potential_matches_pyro_and_samples_the_posterior():
    """model_potential(model) equals Pyro's initialize_model potential chain by chain (with
    LogNormal and Dirichlet sites, so transforms and Jacobians are exercised), and run_chains on it
    recovers the conjugate Normal posterior mean of mu with s fixed."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer.mcmc.util import initialize_model

    from probgen.infer import model_potential

    y = 1.0 + torch.randn(20, dtype=F64, generator=torch.Generator().manual_seed(0))

    def model(y):
        mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=F64), 2.0))
        s = pyro.sample("s", dist.LogNormal(torch.zeros((), dtype=F64), 1.0))
        w = pyro.sample("w", dist.Dirichlet(torch.ones(3, dtype=F64)))
        with pyro.plate("obs", len(y)):
            pyro.sample("y", dist.Normal(mu + 0.5 * w[..., 0], s), obs=y)

    pot = model_potential(model, y)
    assert pot.site_names == ["mu", "s", "w"] and pot.dim == 4
    _, single, _, _ = initialize_model(model, (y,), {})
    z = pot.init(6, generator=torch.Generator().manual_seed(1))
    expected = torch.stack([single({k: v[i] for k, v in pot._split(z).items()}) for i in range(6)])
    torch.testing.assert_close(pot(z), expected)
    x = pot.constrain(z)
    assert x["w"].shape == (6, 3)
    torch.testing.assert_close(x["w"].sum(-1), torch.ones(6, dtype=F64))

    def model_mu(y):
        mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=F64), 2.0))
        with pyro.plate("obs", len(y)):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    pot = model_potential(model_mu, y)
    res = run_chains(pot, pot.init(500), num_samples=40, warmup_steps=100,
                     generator=torch.Generator().manual_seed(2))
    mu = pot.constrain(res.samples)["mu"]  # (500, 40)
    v = 1.0 / (1.0 / 4.0 + 20.0)
    m = v * float(y.sum())
    se = float(mu.mean(1).std()) / math.sqrt(500)  # batch means over chains (see module docstring)
    assert abs(float(mu.mean()) - m) < 4 * se
    assert abs(float(mu.var()) / v - 1) < 0.1  # 20,000 draws, ESS > 2,000: relative SE < 0.032
    idata = res.to_inference_data(unpack=pot.constrain)
    assert set(idata.posterior.data_vars) == {"mu"}
