"""IWAE bound of ``VAE.log_likelihood`` on a linear-Gaussian VAE, where ``log p(x)`` is known in closed form.

Model: ``z ~ N(0, I_2)``, ``x = W z + b + σ ε`` with ``W`` having orthogonal columns, so that
``p(x) = N(b, W Wᵀ + σ² I)`` and the exact posterior ``N(m(x), S)``, ``S = (I + WᵀW / σ²)⁻¹``, is diagonal:
a diagonal-Gaussian encoder can represent it exactly.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from probgen.vae import VAE

D, L, SIGMA = 3, 2, 0.5
W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]], dtype=torch.float64)  # orthogonal columns
B_VEC = torch.tensor([0.5, -1.0, 0.2], dtype=torch.float64)
S_DIAG = 1.0 / (1.0 + (W.T @ W).diagonal() / SIGMA**2)  # exact posterior variances


class LinearDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(L, D).double()
        with torch.no_grad():
            self.lin.weight.copy_(W)
            self.lin.bias.copy_(B_VEC)

    def forward(self, z):
        return self.lin(z)


class AffineEncoder(nn.Module):
    """``loc = shrink · m(x) + shift``, ``scale = inflate · sqrt(S)``; exact posterior for (1, 0, 1)."""

    def __init__(self, shrink: float = 1.0, shift: float = 0.0, inflate: float = 1.0) -> None:
        super().__init__()
        a = (S_DIAG[:, None] * W.T) / SIGMA**2  # m(x) = A (x - b)
        self.register_buffer("a", a)
        self.shrink, self.shift, self.inflate = shrink, shift, inflate

    def forward(self, x):
        m = (x - B_VEC) @ self.a.T
        return self.shrink * m + self.shift, (self.inflate * S_DIAG.sqrt()).expand(x.shape[0], L)


def make_vae(**encoder_opts) -> VAE:
    return VAE(AffineEncoder(**encoder_opts), LinearDecoder(), L, obs_scale=SIGMA).double()


def true_log_prob(x):
    cov = W @ W.T + SIGMA**2 * torch.eye(D, dtype=torch.float64)
    return torch.distributions.MultivariateNormal(B_VEC, cov).log_prob(x)


def data(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return B_VEC + torch.randn(n, L, generator=g, dtype=torch.float64) @ W.T + SIGMA * torch.randn(
        n, D, generator=g, dtype=torch.float64)


def test_exact_posterior_gives_exact_log_likelihood_with_one_particle():
    vae = make_vae()
    x = data(16)
    for k in (1, 3):
        est = vae.log_likelihood(x, num_particles=k, generator=torch.Generator().manual_seed(k))
        # every importance weight equals p(x): zero variance, exact up to rounding
        torch.testing.assert_close(est, true_log_prob(x), rtol=0, atol=1e-10)


def test_iwae_is_a_lower_bound_that_converges_to_log_p():
    vae = make_vae(shrink=0.8, shift=0.1, inflate=1.3)  # a deliberately imperfect proposal
    n_points = 8
    x = data(n_points)
    truth = true_log_prob(x)

    # Var_q[w / p(x)] per point, from 200k exact (test-side) draws of the proposal: the delta method gives
    # E[L_K] - log p = -Var/(2K) + O(1/K²)
    loc, scale = vae.encode(x)
    g = torch.Generator().manual_seed(7)
    z = loc + scale * torch.randn(200_000, n_points, L, generator=g, dtype=torch.float64)
    log_w = (torch.distributions.Normal(z @ W.T + B_VEC, SIGMA).log_prob(x).sum(-1)
             + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
             - torch.distributions.Normal(loc, scale).log_prob(z).sum(-1))
    var_ratio = (log_w - truth).exp().var(0)  # (n_points,)

    gen = torch.Generator().manual_seed(0)
    gaps = {}
    for k in (1, 10, 100, 1000, 5000):
        repeats = 400 if k <= 100 else 40  # more repeats where they are cheap: the K <= 100 gaps are compared
        est = vae.log_likelihood(x.repeat(repeats, 1), num_particles=k, generator=gen).reshape(repeats, n_points)
        gap = (est - truth).mean(1)  # (repeats,) independent estimates of the average gap over the points
        mean, se = gap.mean().item(), gap.std().item() / math.sqrt(repeats)
        gaps[k] = (mean, se)
        # lower bound in expectation: the mean over repeats minus 3 standard errors is below the truth
        assert mean - 3 * se <= 0.0, (k, mean, se)
        if k >= 100:  # converges like the delta-method bias -Var/(2K); 3 SE plus a 10% error on the variance
            predicted = -(var_ratio / (2 * k)).mean().item()
            assert abs(mean - predicted) <= 3 * se + 0.1 * abs(predicted), (k, mean, predicted, se)
    # the bound tightens with K: gap(1) < gap(10) < gap(100) by more than their combined 3 SE
    for k1, k2 in ((1, 10), (10, 100)):
        (m1, s1), (m2, s2) = gaps[k1], gaps[k2]
        assert m2 - m1 > 3 * math.hypot(s1, s2), (k1, k2, gaps)


def test_chunking_does_not_change_the_estimate():
    vae = make_vae(shrink=0.8, shift=0.1, inflate=1.3)
    x = data(5)
    a = vae.log_likelihood(x, num_particles=50, chunk_size=7, generator=torch.Generator().manual_seed(3))
    b = vae.log_likelihood(x, num_particles=50, chunk_size=None, generator=torch.Generator().manual_seed(3))
    c = vae.log_likelihood(x, num_particles=50, chunk_size=50, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    torch.testing.assert_close(a, c, rtol=0, atol=1e-12)
    # the global RNG stream is chunk-invariant too
    torch.manual_seed(5)
    d = vae.log_likelihood(x, num_particles=20, chunk_size=3)
    torch.manual_seed(5)
    e = vae.log_likelihood(x, num_particles=20)
    torch.testing.assert_close(d, e, rtol=0, atol=1e-12)


def test_log_likelihood_is_evaluated_without_graph_unless_asked():
    vae = VAE(latent_dim=2, event_shape=(3,), hidden=(8,)).double()
    x = data(4)
    assert not vae.log_likelihood(x, num_particles=5).requires_grad
    ll = vae.log_likelihood(x, num_particles=5, differentiable=True)
    assert ll.requires_grad
    ll.sum().backward()
    assert vae.encoder.head.weight.grad is not None


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_num_particles_is_validated(bad):
    with pytest.raises((ValueError, TypeError), match="num_particles"):
        make_vae().log_likelihood(data(2), num_particles=bad)
