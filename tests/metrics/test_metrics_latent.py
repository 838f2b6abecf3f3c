"""Clustering scores of latents, PSNR and SSIM closed forms."""

from __future__ import annotations

import math

import pytest
import torch

import probgen.metrics as M


def test_perfectly_separated_clusters_score_one():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0, 0.0], [50.0, 0.0, 0.0], [0.0, 50.0, 0.0]])
    labels = torch.tensor([2, 0, 1]).repeat_interleave(40)  # label names unrelated to cluster order
    z = centers.repeat_interleave(40, dim=0) + torch.randn(120, 3, generator=g)
    s = M.clustering_scores(z, labels)
    assert s["num_clusters"] == 3
    for key in ("homogeneity", "completeness", "v_measure", "adjusted_rand"):
        assert s[key] == pytest.approx(1.0, abs=1e-12)


def test_labels_independent_of_latents_score_near_zero():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(300, 2, generator=g)
    labels = torch.randint(0, 3, (300,), generator=g)
    s = M.clustering_scores(z, labels, seed=1)
    assert s["v_measure"] < 0.1 and abs(s["adjusted_rand"]) < 0.1


def test_psnr_closed_form():
    # x_hat = x + c everywhere: MSE = c², PSNR = 10 log10(R² / c²)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2 - 1
    c = 0.05
    want = 10 * math.log10(2.0**2 / c**2)
    torch.testing.assert_close(M.psnr(x, x + c), torch.full((4,), want, dtype=torch.float64))
    m = M.reconstruction_metrics(x, x + c)
    assert m["mse"] == pytest.approx(c**2, rel=1e-12)
    assert m["psnr"] == pytest.approx(want, rel=1e-12)
    assert M.reconstruction_metrics(x, x)["psnr"] == math.inf
    assert set(M.reconstruction_metrics(x.flatten(1), x.flatten(1) + c)) == {"mse", "psnr"}  # no SSIM for (B, D)


def test_ssim_identity_constant_images_and_symmetry():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 2, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(M.ssim(x, x), torch.ones(3, dtype=torch.float64))
    assert M.reconstruction_metrics(x, x)["ssim"] == pytest.approx(1.0, abs=1e-12)
    # constant images a and b: zero local variances, so SSIM = (2ab + C1) / (a² + b² + C1), C1 = (0.01 R)²
    a, b, R = 0.3, -0.2, 2.0
    c1 = (0.01 * R) ** 2
    ones = torch.ones(1, 1, 16, 16, dtype=torch.float64)
    assert M.ssim(a * ones, b * ones).item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-9)
    y = x + 0.3 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(M.ssim(x, y), M.ssim(y, x))
    # more noise, lower SSIM
    z = x + 0.6 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    assert bool((M.ssim(x, z) < M.ssim(x, y)).all())


def test_ssim_uncorrelated_structure_on_large_images():
    # x and an independent image with the same flat local mean: the structure term ~ 0, so SSIM is small;
    # the default 11×11 window applies from 11 pixels up
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 1, 32, 32, generator=g, dtype=torch.float64) * 0.3
    y = torch.randn(2, 1, 32, 32, generator=g, dtype=torch.float64) * 0.3
    assert bool((M.ssim(x, y).abs() < 0.1).all())
    torch.testing.assert_close(M.ssim(x, y), M.ssim(x, y, window_size=11, sigma=1.5))


def test_errors():
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="x_hat must have the shape of x"):
        M.reconstruction_metrics(x, torch.zeros(2, 1, 8, 7))
    with pytest.raises(ValueError, match="window_size must be odd"):
        M.ssim(x, x, window_size=4)
    with pytest.raises(ValueError, match="window_size must be <= 8"):
        M.ssim(x, x, window_size=11)
    with pytest.raises(ValueError, match=r"images of shape \(batch, channels, height, width\)"):
        M.ssim(torch.zeros(2, 64), torch.zeros(2, 64))
    with pytest.raises(ValueError, match="data_range must be > 0"):
        M.psnr(x, x, data_range=0)
    with pytest.raises(ValueError, match=r"labels must have shape \(6,\)"):
        M.clustering_scores(torch.zeros(6, 2), torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        M.clustering_scores(torch.zeros(6, 2), torch.zeros(6))
