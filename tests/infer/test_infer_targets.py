"""Named potentials: each equals the negative log-density of its distribution up to a constant, and the
moments they advertise are the distribution's."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from probgen.infer.targets import banana, correlated_gaussian, get_potential, neals_funnel


def _const_offset(u, logp):
    diff = u + logp  # U = -log p + c  =>  U + log p = c for every x
    return (diff - diff[0]).abs().max().item()


def test_gaussian_potential_and_moments():
    p = correlated_gaussian(5)
    x = torch.randn(50, 5, dtype=torch.float64)
    ref = MultivariateNormal(torch.zeros(5, dtype=torch.float64), p.cov)
    assert _const_offset(p(x), ref.log_prob(x)) < 1e-10
    assert p.cov[0, 1].item() == pytest.approx(0.9)


def test_funnel_potential_and_moments():
    p = neals_funnel(4)
    x = torch.randn(50, 4, dtype=torch.float64)
    v = x[:, 0]
    logp = Normal(0.0, 3.0).log_prob(v) + Normal(0.0, torch.exp(v / 2)[:, None]).log_prob(x[:, 1:]).sum(-1)
    assert _const_offset(p(x), logp) < 1e-10
    assert p.cov[1, 1].item() == pytest.approx(math.exp(4.5))  # E[e^v] for v ~ N(0, 9)


def test_banana_moments_by_exact_sampling():
    p = banana(2)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x1 = math.sqrt(10) * torch.randn(n, generator=g, dtype=torch.float64)
    x2 = torch.randn(n, generator=g, dtype=torch.float64) - 0.1 * (x1**2 - 10)
    x = torch.stack([x1, x2], 1)
    logp = Normal(0.0, math.sqrt(10)).log_prob(x1) + Normal(0.0, 1.0).log_prob(x2 + 0.1 * (x1**2 - 10))
    assert _const_offset(p(x[:100]), logp[:100]) < 1e-10
    var = x.var(0)
    # SE of a sample variance ~ sqrt(2/n) * var for near-Gaussian tails; x2 is skewed, so allow 6 SE
    assert torch.allclose(var, p.cov.diagonal(), rtol=6 * math.sqrt(2 / n) * 3)


def test_unknown_potential_names_the_choices():
    with pytest.raises(ValueError, match="unknown potential 'nope'; valid choices: 'gaussian', 'funnel', 'banana'"):
        get_potential("nope")
