"""Score-matching objectives recover a Gaussian energy fitted to Gaussian data.

Model: ``E(x) = ½ (x - μ)ᵀ P (x - μ)``, ``P = L Lᵀ``, score ``s(x) = -P (x - μ)``. For data with sample
mean ``x̄`` and (1/N) covariance ``S``, Hyvärinen's objective is, in closed form,

    J(μ, P) = -tr P + ½ tr(P S P) + ½ (x̄ - μ)ᵀ P² (x̄ - μ),

minimized at ``μ = x̄``, ``P = S⁻¹`` (the Gaussian MLE). Everything in float64.
"""

from __future__ import annotations

import math

import pytest
import torch

from probgen.ops.score_matching import (
    denoising_score_matching_loss,
    exact_score_matching_loss,
    sliced_score_matching_loss,
)

D = 2
N = 2000
TRUE_MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
TRUE_COV = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)


def _data(n: int = N, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, D, generator=g, dtype=torch.float64)
    return TRUE_MEAN + z @ torch.linalg.cholesky(TRUE_COV).T


class GaussianScore(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mean = torch.nn.Parameter(torch.zeros(D, dtype=torch.float64))
        self.raw = torch.nn.Parameter(torch.zeros(D, D, dtype=torch.float64))  # L = tril(raw), exp on diagonal

    def precision(self) -> torch.Tensor:
        L = torch.tril(self.raw, -1) + torch.diag(torch.exp(torch.diagonal(self.raw)))
        return L @ L.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -(x - self.mean) @ self.precision()


def _fit(model: GaussianScore, loss_fn, steps: int = 60) -> None:
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=steps, tolerance_grad=1e-12,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


def _mle_se(precision: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymptotic standard errors of the Gaussian MLE: mean sqrt(Σ_ii / n); precision entries
    sqrt((P_ij² + P_ii P_jj) / n) (the Wishart variance of an inverse covariance)."""
    cov = torch.linalg.inv(precision)
    se_mean = torch.sqrt(torch.diagonal(cov) / n)
    d = torch.diagonal(precision)
    se_prec = torch.sqrt((precision**2 + d[:, None] * d[None, :]) / n)
    return se_mean, se_prec


def test_exact_loss_matches_closed_form():
    x = _data()
    model = GaussianScore()
    with torch.no_grad():
        model.mean.copy_(torch.tensor([0.3, 0.2], dtype=torch.float64))
        model.raw.copy_(torch.tensor([[0.1, 0.0], [0.4, -0.2]], dtype=torch.float64))
    P = model.precision().detach()
    xbar = x.mean(0)
    S = (x - xbar).T @ (x - xbar) / N
    d = xbar - model.mean.detach()
    closed = -torch.trace(P) + 0.5 * torch.trace(P @ S @ P) + 0.5 * d @ P @ P @ d
    assert torch.allclose(exact_score_matching_loss(model, x), closed, atol=1e-10)
    per = exact_score_matching_loss(model, x, reduction="none")
    assert per.shape == (N,) and torch.allclose(per.sum(), exact_score_matching_loss(model, x, reduction="sum"))


def test_exact_gradient_vanishes_at_mle_and_fit_recovers_it():
    x = _data()
    xbar = x.mean(0)
    S = (x - xbar).T @ (x - xbar) / N
    model = GaussianScore()
    _fit(model, lambda: exact_score_matching_loss(model, x))
    # deterministic objective whose minimizer is known exactly: optimisation tolerance only
    assert torch.allclose(model.mean.detach(), xbar, atol=1e-6)
    assert torch.allclose(model.precision().detach(), torch.linalg.inv(S), atol=1e-6)


def test_sliced_recovers_gaussian_parameters():
    x = _data()
    model = GaussianScore()
    num_projections = 16

    def loss():  # fixed projections: a deterministic objective LBFGS can minimize
        return sliced_score_matching_loss(model, x, num_projections=num_projections, noise="rademacher",
                                          generator=torch.Generator().manual_seed(1))

    _fit(model, loss)
    true_prec = torch.linalg.inv(TRUE_COV)
    se_mean, se_prec = _mle_se(true_prec, N)
    # 5 MLE standard errors: the data noise of the MLE plus the projection noise, which with
    # Rademacher probes only enters through the off-diagonal of P and is O(1/sqrt(N * P)).
    assert (model.mean.detach() - TRUE_MEAN).abs().le(5 * se_mean).all()
    assert (model.precision().detach() - true_prec).abs().le(5 * se_prec).all()


def test_sliced_variants_are_unbiased_for_exact_objective():
    x = _data(200)
    model = GaussianScore()
    with torch.no_grad():
        model.mean.fill_(0.2)
        model.raw.copy_(torch.tensor([[0.3, 0.0], [0.5, -0.1]], dtype=torch.float64))
    exact = exact_score_matching_loss(model, x).item()
    for vr in (True, False):
        per = sliced_score_matching_loss(model, x, num_projections=200, noise="gaussian", variance_reduction=vr,
                                         reduction="none", generator=torch.Generator().manual_seed(2))
        se = per.std().item() / math.sqrt(per.numel())  # per-sample averages are i.i.d. given the data
        assert abs(per.mean().item() - exact) < 4 * se + 1e-12


def test_denoising_recovers_smoothed_gaussian():
    sigma = 0.3
    repeats = 4
    x = _data().repeat(repeats, 1)
    model = GaussianScore()
    _fit(model, lambda: denoising_score_matching_loss(model, x, sigma, generator=torch.Generator().manual_seed(3)))
    # the DSM minimizer is the score of N(m, Σ + σ² I): a known bias, not an error
    target_prec = torch.linalg.inv(TRUE_COV + sigma**2 * torch.eye(D, dtype=torch.float64))
    se_mean, se_prec = _mle_se(target_prec, N)
    # DSM regresses the target -z/σ (variance 1/σ² per coordinate) on x̃: the slope's extra
    # standard error is ≈ sqrt(P_ii) / (σ sqrt(n)) with n = N * repeats noise draws.
    se_noise = torch.sqrt(torch.diagonal(target_prec))[:, None] / (sigma * math.sqrt(N * repeats))
    tol_prec = 5 * torch.sqrt(se_prec**2 + se_noise**2)
    tol_mean = 5 * torch.sqrt(se_mean**2 + 1.0 / (sigma**2 * N * repeats * torch.diagonal(target_prec)))
    assert (model.mean.detach() - TRUE_MEAN).abs().le(tol_mean).all()
    assert (model.precision().detach() - target_prec).abs().le(tol_prec).all()


def test_denoising_per_sample_sigma_calls_conditional_score():
    x = _data(16)
    sigma = torch.linspace(0.1, 1.0, 16, dtype=torch.float64)
    seen = {}

    def score(z, s):
        seen["sigma"] = s
        return -z / (1.0 + s[:, None] ** 2)

    loss = denoising_score_matching_loss(score, x, sigma, weighting="sigma2")
    assert loss.dim() == 0 and seen["sigma"] is sigma


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x: exact_score_matching_loss(lambda z: -z, x, reduction="avg"), "unknown reduction 'avg'"),
        (lambda x: sliced_score_matching_loss(lambda z: -z, x, num_projections=0), "num_projections must be >= 1"),
        (lambda x: sliced_score_matching_loss(lambda z: -z, x, noise="uniform"), "valid choices: 'rademacher'"),
        (lambda x: denoising_score_matching_loss(lambda z: -z, x, 0.0), "sigma must be > 0"),
        (lambda x: denoising_score_matching_loss(lambda z: -z, x, torch.ones(3)), r"shape \(5,\)"),
        (lambda x: denoising_score_matching_loss(lambda z: z[:, :1], x, 0.1), "score_fn returned shape"),
        (lambda x: exact_score_matching_loss(lambda z: -z, x[0]), "at least 2 dimensions"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(torch.randn(5, 2))
