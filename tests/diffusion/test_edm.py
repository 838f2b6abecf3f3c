"""EDM: preconditioning and Heun step against the paper's formulas, exact samples and exact likelihood
with the analytic denoiser of Gaussian data."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from probgen.diffusion import EDM, edm_preconditioning

DT = torch.float64
MU = torch.tensor([0.3, -0.2], dtype=DT)
S2 = torch.tensor([0.16, 0.49], dtype=DT)


class ExactF(nn.Module):
    """``F`` such that the preconditioned ``D`` is the exact denoiser of N(MU, diag S2)."""

    def __init__(self, sigma_data: float):
        super().__init__()
        self.sigma_data = sigma_data

    def forward(self, x_in, c_noise):
        sigma = (4 * c_noise).exp()
        c_skip, c_out, c_in, _ = edm_preconditioning(sigma, self.sigma_data)
        x = x_in / c_in[:, None]
        exact = MU + S2 / (S2 + sigma[:, None] ** 2) * (x - MU)
        return (exact - c_skip[:, None] * x) / c_out[:, None]


def exact_edm() -> EDM:
    model = EDM(2, net_options={"hidden": [4]})
    model.net = ExactF(model.sigma_data)
    return model


def test_preconditioning_is_table_1():
    sigma, sd = torch.tensor([0.002, 0.5, 3.0, 80.0], dtype=DT), 0.5
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, sd)
    torch.testing.assert_close(c_skip, sd**2 / (sigma**2 + sd**2))
    torch.testing.assert_close(c_out, sigma * sd / (sigma**2 + sd**2).sqrt())
    torch.testing.assert_close(c_in, 1 / (sigma**2 + sd**2).sqrt())
    torch.testing.assert_close(c_noise, sigma.log() / 4)
    # the effective training target has unit variance for data of std σ_d (paper, eq. 8 and App. B.6)
    var_target = (1 - c_skip) ** 2 * sd**2 / c_out**2 + c_skip**2 * sigma**2 / c_out**2
    torch.testing.assert_close(var_target, torch.ones_like(sigma))


def test_denoiser_and_loss_weighting():
    model = EDM(2, net_options={"hidden": [8]}).double()
    x, sigma = torch.randn(5, 2, dtype=DT), torch.full((5,), 0.7, dtype=DT)
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, 0.5)
    expected = c_skip[:, None] * x + c_out[:, None] * model.net(c_in[:, None] * x, c_noise)
    torch.testing.assert_close(model.denoise(x, sigma), expected)
    # with the exact denoiser, E λ(σ) ‖D - y‖² = E λ(σ) Σ_d S2 σ²/(S2 + σ²) over ln σ ~ N(-1.2, 1.2²)
    model = exact_edm()
    g = torch.Generator().manual_seed(0)
    y = MU + S2.sqrt() * torch.randn(100_000, 2, generator=g, dtype=DT)
    ls = -1.2 + 1.2 * torch.randn(400_000, generator=torch.Generator().manual_seed(1), dtype=DT)
    s = ls.exp()[:, None]
    lam = (s**2 + 0.25) / (s * 0.5) ** 2
    reference = float((lam * S2 * s**2 / (S2 + s**2)).sum(-1).mean())
    losses = torch.stack([model.loss(y[i::10], generator=g) for i in range(10)])
    assert abs(float(losses.mean()) - reference) < 4 * float(losses.std() / math.sqrt(10)) + 0.01 * reference


@pytest.mark.parametrize("method, opts", [("heun", {}), ("heun", {"s_churn": 10.0, "s_tmin": 0.05, "s_tmax": 50.0}),
                                          ("dpm++2m", {})])
def test_analytic_denoiser_gives_exact_samples(method, opts):
    model = exact_edm()
    x, nfe = model.sample(4000, method=method, steps=40, generator=torch.Generator().manual_seed(2), dtype=DT,
                          return_nfe=True, **opts)
    assert ((x.mean(0) - MU).abs() < 5 * (S2 / 4000).sqrt()).all()
    assert ((x.var(0) / S2 - 1).abs() < 0.1).all(), x.var(0)
    assert nfe == (79 if method == "heun" else 40)


def test_ode_likelihood_is_the_truth():
    model = exact_edm()
    x = MU + S2.sqrt() * torch.randn(6, 2, generator=torch.Generator().manual_seed(3), dtype=DT)
    normal = torch.distributions.Normal
    true = normal(MU, (S2 + model.sigma_min**2).sqrt()).log_prob(x).sum(-1)
    prior = lambda z: normal(MU, (S2 + model.sigma_max**2).sqrt()).log_prob(z).sum(-1)  # noqa: E731
    lp = model.log_prob(x, rtol=1e-7, atol=1e-7, prior_log_prob=prior)
    assert (lp - true).abs().max() < 1e-4, (lp - true)
    # the default N(0, σ_max² I) prior differs from the truth by O(|μ|² / σ_max²)
    assert (model.log_prob(x) - true).abs().max() < 1e-2


def test_config_and_errors():
    model = EDM(3, sigma_data=1.0, net_options={"hidden": [8]})
    assert EDM(**model.config()).sigma_data == 1.0
    with pytest.raises(ValueError, match="sigma_max must be > sigma_min"):
        EDM(2, sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="unknown method 'ddim'"):
        model.sample(2, method="ddim")
    with pytest.raises(ValueError, match="sigma must be a positive"):
        model.denoise(torch.zeros(2, 3), torch.zeros(2))
