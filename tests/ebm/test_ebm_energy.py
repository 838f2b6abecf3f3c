"""probgen.ebm.EBM: energies and readouts, scores, samplers (Langevin, MALA, Pyro NUTS), AIS, errors.

The reference model is a Gaussian energy ``E(x) = ½ (x - μ)ᵀ P (x - μ)``: its tempered density
``exp(-E/T)`` is ``N(μ, T P⁻¹)`` and ``log Z = (D/2) log 2π + ½ log det(T P⁻¹)``. Float64 throughout.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from probgen.ebm import EBM, OBJECTIVES

MU = torch.tensor([1.0, -1.0], dtype=torch.float64)
PREC = torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64)


class GaussianEnergy(torch.nn.Module):
    def __init__(self, mean=MU, precision=PREC) -> None:
        super().__init__()
        self.mean = torch.nn.Parameter(mean.clone())
        self.precision = torch.nn.Parameter(precision.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x - self.mean
        return 0.5 * ((d @ self.precision) * d).sum(-1)


def gaussian_ebm(**kw) -> EBM:
    return EBM(GaussianEnergy(), dim=2, **kw).double()


def test_energy_log_prob_and_score_closed_form():
    ebm = gaussian_ebm(temperature=2.0)
    x = torch.randn(7, 2, dtype=torch.float64)
    d = x - MU
    energy = 0.5 * ((d @ PREC) * d).sum(-1)
    assert torch.allclose(ebm.energy(x), energy)
    assert torch.allclose(ebm.log_prob(x), -energy / 2.0)
    assert torch.allclose(ebm.log_prob(x, temperature=0.5), -energy / 0.5)
    assert torch.allclose(ebm.score(x), -(d @ PREC) / 2.0)
    # the score is the autograd gradient of log_prob
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ebm.log_prob(xg).sum(), xg)
    assert torch.allclose(ebm.score(x), g)


def test_default_mlp_energy_shapes_and_images():
    ebm = EBM(event_shape=(1, 4, 4), hidden=(16,)).double()
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    assert ebm.energy(x).shape == (3,) and ebm.score(x).shape == x.shape
    assert ebm.sample(2, steps=3).shape == (2, 1, 4, 4)


class Linear(torch.nn.Module):
    """f(x) = x Aᵀ, optionally ignoring a time argument (a stand-in for a U-Net f(x, t))."""

    def __init__(self, A, takes_time=False):
        super().__init__()
        self.A = torch.nn.Parameter(A.clone())
        self.takes_time = takes_time
        self.seen_t = None

    def forward(self, x, t=None):
        self.seen_t = t
        return x @ self.A.T


@pytest.mark.parametrize("readout", ["inner", "quadratic"])
def test_vector_readouts(readout):
    A = torch.tensor([[2.0, 0.5], [0.1, 1.0]], dtype=torch.float64)
    net = Linear(A, takes_time=True)
    ebm = EBM(net, dim=2, readout=readout, time_input=0.25).double()
    x = torch.randn(5, 2, dtype=torch.float64)
    fx = x @ A.T
    want = (x * fx).sum(-1) if readout == "inner" else 0.5 * ((x - fx) ** 2).sum(-1)
    assert torch.allclose(ebm.energy(x), want)
    assert net.seen_t == 0.25


def test_mala_sampler_targets_tempered_gaussian():
    ebm = gaussian_ebm()
    n = 2000
    for temperature in (1.0, 4.0):
        x = ebm.sample(n, method="mala", steps=200, step_size=0.1, temperature=temperature,
                       generator=torch.Generator().manual_seed(1))
        cov = temperature * torch.linalg.inv(PREC)
        var = torch.diagonal(cov)
        # independent chains: SE(mean) = sqrt(var / n), SE(var) = var sqrt(2 / n)
        assert ((x.mean(0) - MU).abs() < 5 * torch.sqrt(var / n)).all()
        assert ((x.var(0) - var).abs() < 5 * var * math.sqrt(2.0 / n)).all()


def test_langevin_sampler_small_step_close_to_target():
    ebm = gaussian_ebm(init_noise="gaussian", init_scale=1.0)
    n, h = 2000, 0.01
    x = ebm.sample(n, method="langevin", steps=400, step_size=h, generator=torch.Generator().manual_seed(2))
    # ULA on N(μ, P⁻¹) is exactly Gaussian with variance 1 / (λ (1 - hλ/2)) per eigenvalue λ: O(h) bias
    lam = torch.diagonal(PREC)
    var = 1.0 / (lam * (1.0 - h * lam / 2.0))
    assert ((x.mean(0) - MU).abs() < 5 * torch.sqrt(var / n)).all()
    assert ((x.var(0) - var).abs() < 5 * var * math.sqrt(2.0 / n)).all()


def test_as_distribution_under_pyro_nuts():
    ebm = gaussian_ebm()
    dist = ebm.as_distribution()
    assert dist.event_shape == (2,) and dist.batch_shape == ()
    assert dist.support.event_dim == 1 and bool(dist.support.check(torch.zeros(2)))

    def model():
        pyro.sample("x", dist)

    n = 150
    mcmc = pyro.infer.MCMC(pyro.infer.NUTS(model), num_samples=n, warmup_steps=60, disable_progbar=True)
    mcmc.run()
    x = mcmc.get_samples()["x"]
    sd = torch.sqrt(torch.diagonal(torch.linalg.inv(PREC)))
    # NUTS on a Gaussian has an ESS close to n; allow n / 3 (autocorrelation) and 5 SEs
    assert x.shape == (n, 2)
    assert ((x.mean(0) - MU).abs() < 5 * sd / math.sqrt(n / 3)).all()


def test_as_distribution_with_probgen_mala_kernel():
    from probgen.infer import MALA

    ebm = gaussian_ebm()

    def model():
        pyro.sample("x", ebm.as_distribution())

    n = 400
    mcmc = pyro.infer.MCMC(MALA(model, step_size=0.3), num_samples=n, warmup_steps=100, disable_progbar=True)
    mcmc.run()
    x = mcmc.get_samples()["x"]
    sd = torch.sqrt(torch.diagonal(torch.linalg.inv(PREC)))
    # MALA's ESS on this target is roughly n / 10 at the tuned acceptance; 5 SEs of that
    assert ((x.mean(0) - MU).abs() < 5 * sd / math.sqrt(n / 10)).all()


def test_log_partition_by_ais_matches_gaussian_normalizer():
    ebm = gaussian_ebm(temperature=2.0)
    log_z, se = ebm.log_partition(num_chains=200, num_steps=100, return_stderr=True,
                                  generator=torch.Generator().manual_seed(3))
    cov = 2.0 * torch.linalg.inv(PREC)
    exact = math.log(2 * math.pi) + 0.5 * torch.logdet(cov).item()
    assert se.item() < 0.1
    assert abs(log_z.item() - exact) < 4 * se.item() + 1e-3


def test_pcd_loss_fills_replay_buffer_and_persistent_sampling():
    ebm = EBM(dim=2, hidden=(8,), objective="pcd", buffer_size=50, sample_steps=2).double()
    x = torch.randn(16, 2, dtype=torch.float64)
    assert int(ebm.replay.filled.sum()) == 0
    loss = ebm.loss(x)
    loss.backward()
    filled = int(ebm.replay.filled.sum())
    assert 0 < filled <= 16
    assert ebm.sample(4, method="persistent", steps=2).shape == (4, 2)


def test_cd_loss_gradient_is_energy_difference():
    torch.manual_seed(0)
    ebm = EBM(GaussianEnergy(), dim=2, objective="cd", alpha=0.0, sample_steps=3).double()
    x = torch.randn(32, 2, dtype=torch.float64)
    loss = ebm.loss(x)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(ebm.energy_net.mean.grad).all()


def test_config_round_trip():
    ebm = EBM(dim=3, hidden=(8, 8), objective="ssm", activation="softplus", num_projections=2)
    clone = type(ebm)(**ebm.config())
    clone.load_state_dict(ebm.state_dict())
    x = torch.randn(4, 3)
    assert torch.allclose(clone.energy(x), ebm.energy(x))
    assert clone.config() == ebm.config()


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: EBM(dim=2, objective="mle"), "unknown objective 'mle'; valid choices: 'cd', 'pcd'"),
        (lambda: EBM(dim=2, readout="vector"), "unknown readout 'vector'"),
        (lambda: EBM(dim=2, step_size=0.0), "step_size must be > 0"),
        (lambda: EBM(dim=2, step_size=-1), "step_size must be > 0"),
        (lambda: EBM(dim=2, event_shape=(2,)), "exactly one of dim"),
        (lambda: EBM(), "exactly one of dim"),
        (lambda: EBM(dim=2, objective="pcd", buffer_size=0), "buffer_size must be >= 1"),
        (lambda: EBM(dim=2, temperature=0), "temperature must be > 0"),
        (lambda: EBM(dim=2, noise="laplace"), "unknown noise 'laplace'"),
    ],
)
def test_bad_construction(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()


def test_bad_calls():
    ebm = EBM(dim=2, hidden=(8,), buffer_size=0)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2\)"):
        ebm.energy(torch.randn(4, 3))
    with pytest.raises(ValueError, match="step_size must be > 0"):
        ebm.sample(3, step_size=-0.1)
    with pytest.raises(ValueError, match="unknown method 'gibbs'; valid choices: 'langevin', 'mala', 'persistent'"):
        ebm.sample(3, method="gibbs")
    with pytest.raises(ValueError, match="needs a replay buffer"):
        ebm.sample(3, method="persistent")
    with pytest.raises(ValueError, match="init must have 3 rows"):
        ebm.sample(3, init=torch.zeros(2, 2))
    with pytest.raises(TypeError, match="default MLP"):
        EBM(GaussianEnergy(), dim=2).config()


def test_all_objectives_give_finite_scalar_losses():
    x = torch.randn(16, 2, dtype=torch.float64)
    for objective in OBJECTIVES:
        ebm = EBM(dim=2, hidden=(8,), objective=objective, sample_steps=3, buffer_size=32).double()
        loss = ebm.loss(x)
        loss.backward()
        # score matching never sees the energy's constant offset (the last bias): its grad stays None
        grads = [p.grad for p in ebm.energy_net.parameters() if p.grad is not None]
        assert loss.dim() == 0 and torch.isfinite(loss), objective
        assert len(grads) >= 3 and all(torch.isfinite(g).all() for g in grads), objective
        assert (ebm.log_z.grad is not None) == (objective == "nce"), objective
