"""Tests of probgen.metrics.coverage: mode_coverage counts by hand, its re-export from probgen.gan, and errors."""

from __future__ import annotations

import math

import pytest
import torch

import probgen.gan
import probgen.metrics
from probgen.metrics import mode_coverage


def test_mode_coverage_counts_by_hand():
    c = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    s = torch.tensor([[0.2, 0.1], [4.1, 0.0], [3.9, 0.3], [10.0, 10.0], [0.0, 4.5]], dtype=torch.float64)
    per, off = mode_coverage(s, c, radius=0.5)
    # [0.0, 4.5] lies exactly on the ball's boundary: the ball is closed (<= r)
    assert per.tolist() == [0.2, 0.4, 0.2]
    assert off.item() == pytest.approx(0.2)
    assert per.dtype == torch.float64 and off.shape == ()


def test_mode_coverage_of_the_mixture_itself():
    # 8 equal Gaussians with σ = 1/(2√2) on the circle of radius 2√2: each ball of radius 3σ holds
    # 1 - e^{-9/2} of its component, so per-mode shares are (1 - e^{-4.5})/8 and off-mode is e^{-4.5}.
    # With N = 40,000 draws the binomial standard errors are ≤ sqrt(0.125·0.875/N) ≈ 1.7e-3; 5 SE tolerance.
    gen = torch.Generator().manual_seed(0)
    sigma, n = 0.5 / math.sqrt(2), 40_000
    angle = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    centers = 2 * math.sqrt(2) * torch.stack([angle.cos(), angle.sin()], 1)
    labels = torch.randint(0, 8, (n,), generator=gen)
    x = centers[labels] + sigma * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    per, off = mode_coverage(x, centers, radius=3 * sigma)
    se = math.sqrt(0.125 * 0.875 / n)
    assert torch.allclose(per, torch.full((8,), (1 - math.exp(-4.5)) / 8, dtype=torch.float64), atol=5 * se)
    assert abs(off.item() - math.exp(-4.5)) < 5 * math.sqrt(math.exp(-4.5) / n)
    assert abs(per.sum().item() + off.item() - 1.0) < 1e-12  # disjoint balls


def test_mode_coverage_is_reexported_from_gan():
    assert probgen.gan.mode_coverage is probgen.metrics.mode_coverage
    assert "mode_coverage" in probgen.gan.__all__ and "mode_coverage" in probgen.metrics.__all__


def test_mode_coverage_errors():
    with pytest.raises(ValueError, match="radius must be > 0"):
        mode_coverage(torch.randn(3, 2), torch.zeros(1, 2), radius=0)
    with pytest.raises(ValueError, match="samples and centers must have the same dimension, got 2 and 3"):
        mode_coverage(torch.randn(3, 2), torch.zeros(1, 3), radius=1.0)
    with pytest.raises((ValueError, TypeError), match="samples"):
        mode_coverage(torch.randn(3), torch.zeros(1, 2), radius=1.0)
