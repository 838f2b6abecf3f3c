"""Sliced Wasserstein: exact 1-D cases, the |δ|²/D law for shifts in D dimensions, scipy cross-check."""

from __future__ import annotations

import math

import pytest
import torch

import probgen.metrics as M


def test_one_dimensional_shift_is_exact():
    x = torch.randn(300, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # in 1-D every direction is ±1, and sorted(x + δ) - sorted(x) = δ: W2 = |δ| for any number of projections
    assert M.sliced_wasserstein(x, x - 1.5, num_projections=3).item() == pytest.approx(1.5, rel=1e-12)
    assert M.sliced_wasserstein(x, x + 0.7, p=1).item() == pytest.approx(0.7, rel=1e-12)


def test_unequal_sizes_hand_computed():
    # uniform on {0, 1} vs uniform on {0, 1/2, 1}: quantile functions differ by 1/2 on (1/3, 2/3), so
    # W1 = 1/6 and W2² = 1/12
    a = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    b = torch.tensor([[0.5], [1.0], [0.0]], dtype=torch.float64)
    assert M.wasserstein_1d(a, b, p=1).item() == pytest.approx(1 / 6, rel=1e-12)
    assert M.sliced_wasserstein(a, b, p=2).item() == pytest.approx(math.sqrt(1 / 12), rel=1e-12)
    assert M.sliced_wasserstein(b, a, p=2).item() == pytest.approx(math.sqrt(1 / 12), rel=1e-12)


def test_wasserstein_1d_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(1)
    a = torch.randn(37, 4, generator=g, dtype=torch.float64)
    b = torch.randn(23, 4, generator=g, dtype=torch.float64) * 2 + 0.3
    got = M.wasserstein_1d(a, b, p=1)
    want = [stats.wasserstein_distance(a[:, j].numpy(), b[:, j].numpy()) for j in range(4)]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-10, atol=1e-12)


def test_shift_in_d_dimensions_gives_norm_squared_over_d():
    # y = x + δ: projected W2² = (θᵀδ)² exactly. For θ uniform on S^(D-1), (θᵀe)² ~ Beta(1/2, (D-1)/2), with
    # mean 1/D and variance 2(D-1) / (D²(D+2)); so SW2² over L directions has mean |δ|²/D and standard error
    # |δ|² sqrt(2(D-1) / (D²(D+2)) / L). Check within 4 SE.
    D, L = 5, 2000
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, D, generator=g, dtype=torch.float64)
    delta = torch.tensor([1.0, -2.0, 0.5, 0.0, 1.0], dtype=torch.float64)
    sw2 = M.sliced_wasserstein(x, x + delta, num_projections=L, generator=g).item() ** 2
    norm2 = delta.pow(2).sum().item()
    se = norm2 * math.sqrt(2 * (D - 1) / (D**2 * (D + 2)) / L)
    assert abs(sw2 - norm2 / D) < 4 * se


def test_independent_gaussian_samples_converge():
    # N(0, 1) vs N(Δ, 1) with n = 20000 each: the empirical W2 differs from |Δ| by O(sqrt(log log n / n))
    # ≈ 0.01; allow 0.05
    g = torch.Generator().manual_seed(3)
    x = torch.randn(20000, 1, generator=g, dtype=torch.float64)
    y = torch.randn(20000, 1, generator=g, dtype=torch.float64) + 0.8
    assert M.sliced_wasserstein(x, y, num_projections=2).item() == pytest.approx(0.8, abs=0.05)


def test_gradient_of_shift():
    # 1-D: SW2² = δ², so d SW2² / dδ = 2δ
    x = torch.randn(50, 1, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    delta = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    M.sliced_wasserstein(x, x + delta).pow(2).backward()
    assert delta.grad.item() == pytest.approx(0.6, rel=1e-10)


def test_errors():
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match="p must be >= 1"):
        M.sliced_wasserstein(x, x, p=0.5)
    with pytest.raises(ValueError, match="same number of features"):
        M.sliced_wasserstein(x, torch.randn(10, 3))
    with pytest.raises(ValueError, match="num_projections must be >= 1"):
        M.sliced_wasserstein(x, x, num_projections=0)
