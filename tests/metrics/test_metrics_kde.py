"""Parzen-window (Gaussian KDE) log-likelihood and cross-validated bandwidth."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

import probgen.metrics as M

kde_module = importlib.import_module("probgen.metrics.kde")


def _normal_pdf(x, var):
    return torch.exp(-0.5 * x**2 / var) / math.sqrt(2 * math.pi * var)


def test_single_sample_is_a_gaussian_density():
    s = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    h = 0.7
    want = torch.distributions.Normal(s, h).log_prob(x).sum(-1)
    got = M.kde_log_likelihood(s, x, bandwidth=h)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_image_events_are_flattened_and_single_point_accepted():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(20, 1, 2, 2, generator=g, dtype=torch.float64)
    x = torch.randn(5, 1, 2, 2, generator=g, dtype=torch.float64)
    flat = M.kde_log_likelihood(s.flatten(1), x.flatten(1), bandwidth=0.5)
    torch.testing.assert_close(M.kde_log_likelihood(s, x, bandwidth=0.5), flat)
    torch.testing.assert_close(M.kde_log_likelihood(s, x[0], bandwidth=0.5), flat[:1])


def test_blocking_does_not_change_the_result(monkeypatch):
    g = torch.Generator().manual_seed(2)
    s = torch.randn(53, 2, generator=g, dtype=torch.float64)
    x = torch.randn(31, 2, generator=g, dtype=torch.float64) * 3  # far points exercise the logsumexp
    want = M.kde_log_likelihood(s, x, bandwidth=0.3)
    monkeypatch.setattr(kde_module, "_MAX_BLOCK_ENTRIES", 17)  # sample blocks of a few rows
    got = M.kde_log_likelihood(s, x, bandwidth=0.3, batch_size=4)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    best, cands, scores = M.select_bandwidth(s, return_scores=True, batch_size=3)
    monkeypatch.undo()
    best2, _, scores2 = M.select_bandwidth(s, return_scores=True)
    torch.testing.assert_close(scores, scores2)
    assert best.item() == best2.item()


def test_kde_mean_matches_convolved_density():
    # For samples s_i ~ N(0, 1) and fixed h, E p̂_h(x) = N(x; 0, 1 + h²) exactly (Gaussian convolution), and
    # Var p̂_h(x) = (E[φ_h(x - s)²] - (E p̂_h)²) / n with E[φ_h(x - s)²] = N(x; 0, 1 + h²/2) / (2 h sqrt(pi)).
    # Check p̂_h at three points within 4 standard errors.
    n, h = 20000, 0.3
    s = torch.randn(n, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x = torch.tensor([[-1.5], [0.0], [1.0]], dtype=torch.float64)
    p_hat = M.kde_log_likelihood(s, x, bandwidth=h).exp()
    mean = _normal_pdf(x[:, 0], 1 + h**2)
    second = _normal_pdf(x[:, 0], 1 + h**2 / 2) / (2 * h * math.sqrt(math.pi))
    se = ((second - mean**2) / n).sqrt()
    assert bool(((p_hat - mean).abs() < 4 * se).all()), (p_hat, mean, se)


def test_cv_bandwidth_estimate_converges_to_true_density():
    # With the cross-validated h, the log-density error on [-2, 2] must shrink with n. At n = 2000 the
    # asymptotically optimal h ≈ 1.06 n^(-1/5) ≈ 0.23 has a log-density bias ≈ h² (x² - 1) / 2, whose mean
    # |.| over the grid is ≈ 0.027, and a relative SE sqrt(R(K) / (n h p(x))) (R(K) = 1 / (2 sqrt(pi))) whose
    # grid average is ≈ 0.04; a mean absolute error below 0.12 leaves a 2x margin over bias + noise.
    x = torch.linspace(-2, 2, 41, dtype=torch.float64).unsqueeze(-1)
    true = torch.distributions.Normal(0.0, 1.0).log_prob(x[:, 0])
    g = torch.Generator().manual_seed(4)
    errors = {}
    for n in (100, 2000):
        s = torch.randn(n, 1, generator=g, dtype=torch.float64)
        h = M.select_bandwidth(s)
        h_opt = 1.06 * n ** (-0.2)
        assert 0.5 * h_opt < h.item() < 2.0 * h_opt
        errors[n] = (M.kde_log_likelihood(s, x, bandwidth=h) - true).abs().mean().item()
    assert errors[2000] < errors[100]
    assert errors[2000] < 0.12


def test_bandwidth_tensor_is_differentiable():
    # single sample: d/dh log N(x; s, h² I_D) = -D / h + |x - s|² / h³
    s = torch.zeros(1, 2, dtype=torch.float64)
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    h = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    M.kde_log_likelihood(s, x, bandwidth=h).sum().backward()
    assert h.grad.item() == pytest.approx(-2 / 0.8 + 5.0 / 0.8**3, rel=1e-12)


def test_select_bandwidth_uses_candidates():
    s = torch.randn(100, 2, generator=torch.Generator().manual_seed(5))
    h = M.select_bandwidth(s, candidates=[1e-3, 0.4, 50.0])
    assert h.item() == pytest.approx(0.4)


def test_errors():
    s, x = torch.randn(30, 2), torch.randn(5, 2)
    with pytest.raises(ValueError, match="unknown bandwidth 'silverman'; valid choices: 'cv'"):
        M.kde_log_likelihood(s, x, bandwidth="silverman")
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        M.kde_log_likelihood(s, x, bandwidth=0.0)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2\)"):
        M.kde_log_likelihood(s, torch.randn(5, 3))
    with pytest.raises(ValueError, match="at least folds=5 rows"):
        M.select_bandwidth(s[:3])
    with pytest.raises(ValueError, match="candidates must all be > 0"):
        M.select_bandwidth(s, candidates=[0.1, -1.0])
    with pytest.raises(ValueError, match="folds must be >= 2"):
        M.select_bandwidth(s, folds=1)
