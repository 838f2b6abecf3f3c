"""DPM-Solver / DPM-Solver++ on Gaussian data with the analytic noise predictor."""

from __future__ import annotations

import pytest
import torch

from probgen.samplers.ddim import sample_ddim
from probgen.samplers.dpm_solver import sample_dpm_solver, time_grid
from probgen.sde.discrete import DiscreteSchedule, linear_betas

DT = torch.float64
MU = torch.tensor([1.0, -0.5], dtype=DT)
SIGMA = torch.tensor([[1.0, 0.6], [0.6, 0.61]], dtype=DT)
SCHEDULE = DiscreteSchedule(linear_betas(1000))


def gaussian_eps(schedule):
    def eps(x, index):  # index: continuous (float) for DPM-Solver
        abar = schedule.marginal_alpha(schedule.index_to_time(index).to(x.dtype)) ** 2
        cov = abar[:, None, None] * SIGMA + (1 - abar)[:, None, None] * torch.eye(2, dtype=DT)
        r = x - abar.sqrt()[:, None] * MU
        return (1 - abar).sqrt()[:, None] * torch.linalg.solve(cov, r.unsqueeze(-1)).squeeze(-1)

    return eps


EPS = gaussian_eps(SCHEDULE)


@pytest.fixture(scope="module")
def x_T():
    return torch.randn(4000, 2, generator=torch.Generator().manual_seed(0), dtype=DT)


@pytest.fixture(scope="module")
def reference(x_T):
    """The probability-flow ODE solution from the same x_T, to ~1e-4 (3rd order, 400 steps)."""
    return sample_dpm_solver(EPS, SCHEDULE, x_T, steps=400, order=3, algorithm="dpmsolver").samples


@pytest.mark.parametrize("algorithm", ["dpmsolver", "dpmsolver++"])
def test_20_steps_reproduce_mean_and_covariance(x_T, algorithm):
    result = sample_dpm_solver(EPS, SCHEDULE, x_T, steps=20, algorithm=algorithm)
    x, n = result.samples, x_T.shape[0]
    assert result.nfe == 20
    # within 3 SE: SE(mean_i) = sqrt(Σ_ii/n), SE(S_ij) = sqrt((Σ_ii Σ_jj + Σ_ij²)/n)
    se_mean = (SIGMA.diagonal() / n).sqrt()
    assert bool(((x.mean(0) - MU).abs() < 3 * se_mean).all()), x.mean(0)
    se_cov = ((SIGMA.diagonal()[:, None] * SIGMA.diagonal()[None, :] + SIGMA**2) / n).sqrt()
    assert bool(((torch.cov(x.T) - SIGMA).abs() < 3 * se_cov).all()), torch.cov(x.T)


@pytest.mark.parametrize("method", ["multistep", "singlestep"])
@pytest.mark.parametrize("algorithm", ["dpmsolver", "dpmsolver++"])
def test_higher_orders_converge_faster(x_T, reference, method, algorithm):
    x = x_T[:500]
    ref = reference[:500]

    def err(order, steps):
        out = sample_dpm_solver(EPS, SCHEDULE, x, steps=steps, order=order, method=method, algorithm=algorithm)
        return float((out.samples - ref).pow(2).mean().sqrt())

    e1, e2, e3 = err(1, 30), err(2, 30), err(3, 30)
    assert e3 < e1 / 4 and e2 < e1 / 2, (e1, e2, e3)
    # first order halves its error when the steps double; third order gains more than 4x (measured ≈ 5–10x)
    assert 1.6 < err(1, 15) / err(1, 30) < 2.5
    assert err(3, 15) / e3 > 3.0


def test_first_order_is_ddim_on_the_same_times():
    # DPM-Solver-1 = DDIM (Lu et al. 2022, Sec. 4.1): on a time grid through the steps it is DDIM exactly
    # (uniform times 1 → 1/N in 3 intervals are the indices 999, 666, 333, 0)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1), dtype=DT)
    ddim = sample_ddim(lambda x, i: EPS(x, i.to(DT)), SCHEDULE, x, timesteps=[0, 333, 666, 999]).samples
    dpm = sample_dpm_solver(EPS, SCHEDULE, x, steps=3, order=1, time_grid_type="time_uniform",
                            denoise_to_zero=True).samples
    # DPM-Solver stops at t = 1/N (ᾱ_1) and then denoises: the same last step as DDIM's to ᾱ = 1
    assert torch.allclose(ddim, dpm, atol=1e-10)


def test_time_grids_and_nfe():
    for kind in ("logSNR", "time_uniform", "time_quadratic"):
        ts = time_grid(SCHEDULE, 1.0, 1e-3, 10, kind)
        assert ts.shape == (11,) and abs(float(ts[0]) - 1.0) < 1e-12 and abs(float(ts[-1]) - 1e-3) < 1e-12
        assert bool((ts[1:] < ts[:-1]).all())
    lam = SCHEDULE.marginal_lambda(time_grid(SCHEDULE, 1.0, 1e-3, 10, "logSNR"))
    assert torch.allclose(lam.diff(), lam.diff()[:1].expand(10), atol=1e-8)
    r = sample_dpm_solver(EPS, SCHEDULE, (3, 2), steps=10, order=3, method="singlestep", dtype=DT)
    assert r.nfe == 10 and r.info["orders"] == [3, 3, 3, 1]
    r = sample_dpm_solver(EPS, SCHEDULE, (3, 2), steps=5, order=3, dtype=DT)
    assert r.nfe == 5 and r.info["orders"] == [1, 2, 3, 2, 1]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"order": 4}, "order must be <= 3"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"method": "adaptive"}, "unknown method 'adaptive'; valid choices: 'multistep', 'singlestep'"),
        ({"algorithm": "unipc"}, "unknown algorithm 'unipc'"),
        ({"time_grid_type": "karras"}, "unknown time_grid_type 'karras'"),
        ({"t_end": 0.0}, r"t_end must lie in \[0.001, 1\]"),
        ({"t_start": 0.5, "t_end": 0.6}, "t_start must be > t_end"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_dpm_solver(EPS, SCHEDULE, (2, 2), **kwargs)
