"""EBM objectives: replay buffer semantics, the CD surrogate, NCE recovering a Gaussian and its log Z."""

from __future__ import annotations

import math

import pytest
import torch

from probgen.ebm import EBM, ReplayBuffer, contrastive_divergence_loss, fit_gaussian, nce_loss

D = 2
TRUE_MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
TRUE_COV = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)


def _data(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return TRUE_MEAN + torch.randn(n, D, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(TRUE_COV).T


class GaussianEnergy(torch.nn.Module):
    """E(x) = ½ (x - μ)ᵀ L Lᵀ (x - μ), L lower triangular with a positive diagonal."""

    def __init__(self) -> None:
        super().__init__()
        self.mean = torch.nn.Parameter(torch.zeros(D, dtype=torch.float64))
        self.raw = torch.nn.Parameter(torch.zeros(D, D, dtype=torch.float64))

    def precision(self) -> torch.Tensor:
        L = torch.tril(self.raw, -1) + torch.diag(torch.exp(torch.diagonal(self.raw)))
        return L @ L.T

    def forward(self, x):
        d = x - self.mean
        return 0.5 * ((d @ self.precision()) * d).sum(-1)


def test_replay_buffer_reinit_and_reuse():
    buf = ReplayBuffer(8, (2,), reinit_prob=0.0).double()
    noise = lambda n: torch.full((n, 2), -1.0, dtype=torch.float64)  # noqa: E731
    x, idx = buf.draw(5, noise)
    assert torch.equal(x, noise(5))  # never-written slots start from noise
    buf.push(torch.arange(16, dtype=torch.float64).reshape(8, 2), torch.arange(8))
    x, idx = buf.draw(20, noise, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, buf.states[idx])  # reinit_prob = 0: every state comes from the buffer
    buf.reinit_prob = 1.0
    x, _ = buf.draw(6, noise)
    assert torch.equal(x, noise(6))
    buf.reinit_prob = 0.05
    x, idx = buf.draw(4000, noise, generator=torch.Generator().manual_seed(1))
    frac = (x[:, 0] == -1.0).double().mean().item()
    assert abs(frac - 0.05) < 4 * math.sqrt(0.05 * 0.95 / 4000)  # binomial standard error
    with pytest.raises(ValueError, match="reinit_prob must lie in"):
        ReplayBuffer(4, (2,), reinit_prob=1.5)


def test_contrastive_divergence_loss_closed_form_and_gradient():
    e_pos = torch.tensor([1.0, 3.0], dtype=torch.float64, requires_grad=True)
    e_neg = torch.tensor([4.0, 0.0, 2.0], dtype=torch.float64, requires_grad=True)
    loss = contrastive_divergence_loss(e_pos, e_neg, alpha=0.5)
    assert torch.isclose(loss, torch.tensor(2.0 - 2.0 + 0.5 * (5.0 + 20.0 / 3.0), dtype=torch.float64))
    loss.backward()
    assert torch.allclose(e_pos.grad, (1.0 + 2 * 0.5 * e_pos.detach()) / 2)
    assert torch.allclose(e_neg.grad, (-1.0 + 2 * 0.5 * e_neg.detach()) / 3)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        contrastive_divergence_loss(e_pos, e_neg, alpha=-1.0)


def test_fit_gaussian_moments():
    x = _data(500)
    q = fit_gaussian(x)
    xbar = x.mean(0)
    S = (x - xbar).T @ (x - xbar) / 500
    assert torch.allclose(q.dist.loc, xbar)
    assert torch.allclose(q.dist.covariance_matrix, S, atol=2e-4)
    assert q.log_prob(x).shape == (500,)


def _fit_lbfgs(model, loss_fn, seed: int) -> None:
    opt = torch.optim.LBFGS([p for p in model.parameters() if p.requires_grad], lr=1.0, max_iter=200,
                            tolerance_grad=1e-10, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        torch.manual_seed(seed)  # the same noise sample at every evaluation: a deterministic objective
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


@pytest.mark.parametrize("noise", ["gaussian", "broad"])
def test_nce_recovers_gaussian_parameters_and_log_normalizer(noise):
    n = 4000
    x = _data(n)
    if noise == "broad":
        noise = torch.distributions.Independent(
            torch.distributions.Normal(torch.zeros(D, dtype=torch.float64), 2.5 * torch.ones(D, dtype=torch.float64)), 1
        )
    ebm = EBM(GaussianEnergy(), dim=D, objective="nce", noise=noise, noise_ratio=4).double()
    _fit_lbfgs(ebm, lambda: ebm.loss(x), seed=7)
    prec = ebm.energy_net.precision().detach()
    true_prec = torch.linalg.inv(TRUE_COV)
    # Gaussian MLE standard errors: sqrt(Σ_ii / n) for the mean, sqrt((P_ij² + P_ii P_jj) / n) for the
    # precision. NCE's asymptotic covariance tends to the MLE's as the noise ratio grows (Gutmann &
    # Hyvärinen 2010, Cor. 7); with ν = 4 we allow 6 MLE standard errors.
    se_mean = torch.sqrt(torch.diagonal(TRUE_COV) / n)
    d = torch.diagonal(true_prec)
    se_prec = torch.sqrt((true_prec**2 + d[:, None] * d[None, :]) / n)
    assert ((ebm.energy_net.mean.detach() - TRUE_MEAN).abs() < 6 * se_mean).all()
    assert ((prec - true_prec).abs() < 6 * se_prec).all()
    # the learnt log Z is the normalizer of the learnt energy (self-normalization), and close to the truth
    log_z_of_fit = 0.5 * D * math.log(2 * math.pi) - 0.5 * torch.logdet(prec).item()
    log_z_true = 0.5 * D * math.log(2 * math.pi) + 0.5 * torch.logdet(TRUE_COV).item()
    # delta method: se(½ log det P̂) ≈ sqrt(D / (2n)) for the MLE; 6 of them, as above
    assert abs(ebm.log_z.item() - log_z_of_fit) < 6 * math.sqrt(D / (2 * n))
    assert abs(ebm.log_z.item() - log_z_true) < 6 * math.sqrt(D / (2 * n))


def test_nce_loss_checks_noise():
    with pytest.raises(TypeError, match="noise must be a distribution with sample and log_prob"):
        nce_loss(lambda z: -z.sum(-1), torch.randn(4, 2), object())
    bad = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(3), 1.0), 1)
    with pytest.raises(ValueError, match=r"must return \(n, 2\) like the data"):
        nce_loss(lambda z: -z.sum(-1), torch.randn(4, 2), bad)
    with pytest.raises(ValueError, match="noise_ratio must be >= 1"):
        nce_loss(lambda z: -z.sum(-1), torch.randn(4, 2), fit_gaussian(torch.randn(9, 2)), noise_ratio=0)
