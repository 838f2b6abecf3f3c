"""Fréchet distance: closed forms, symmetry, agreement with scipy's sqrtm formula, sample convergence, FID."""

from __future__ import annotations

import math

import pytest
import torch

import probgen.metrics as M


def _random_psd(f, g, rank=None):
    a = torch.randn(f, rank or f, generator=g, dtype=torch.float64)
    return a @ a.T / (rank or f)


def test_diagonal_closed_form():
    mu1 = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    mu2 = torch.tensor([1.0, 1.0, 0.5], dtype=torch.float64)
    a = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64)
    b = torch.tensor([9.0, 1.0, 0.0], dtype=torch.float64)  # a singular covariance too
    want = (mu1 - mu2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum()
    got = M.gaussian_frechet(mu1, torch.diag(a), mu2, torch.diag(b))
    assert got.item() == pytest.approx(want.item(), rel=1e-12)


def test_commuting_closed_form():
    # Σ1 = Q diag(a) Qᵀ, Σ2 = Q diag(b) Qᵀ commute; then d² = |Δμ|² + Σ (sqrt a - sqrt b)²
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    a = torch.rand(5, generator=g, dtype=torch.float64) * 3
    b = torch.rand(5, generator=g, dtype=torch.float64) * 3
    mu1, mu2 = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    got = M.gaussian_frechet(mu1, q @ torch.diag(a) @ q.T, mu2, q @ torch.diag(b) @ q.T)
    want = (mu1 - mu2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum()
    assert got.item() == pytest.approx(want.item(), rel=1e-10)


@pytest.mark.parametrize("rank", [None, 2])
def test_symmetric_zero_on_identical_and_matches_scipy(rank):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(1)
    f = 6
    c1, c2 = _random_psd(f, g, rank), _random_psd(f, g)
    mu1, mu2 = torch.randn(f, generator=g, dtype=torch.float64), torch.randn(f, generator=g, dtype=torch.float64)
    d12 = M.gaussian_frechet(mu1, c1, mu2, c2)
    d21 = M.gaussian_frechet(mu2, c2, mu1, c1)
    assert d12.item() == pytest.approx(d21.item(), rel=1e-8)
    assert M.gaussian_frechet(mu1, c1, mu1, c1).item() == pytest.approx(0.0, abs=1e-10)
    # the pytorch-fid formula: tr sqrtm(Σ1 Σ2) (non-symmetric product, real part)
    covmean = scipy_linalg.sqrtm((c1 @ c2).numpy()).real
    want = float((mu1 - mu2).pow(2).sum() + c1.trace() + c2.trace() - 2 * covmean.trace())
    assert d12.item() == pytest.approx(want, rel=1e-6)


def test_sample_fid_converges_to_closed_form():
    # Two non-commuting 3-D Gaussians. R = 10 replicates at n = 4000 per set: the replicate mean must lie
    # within 3 standard errors (replicate std / sqrt(R)) of the closed form, after adding the plug-in bias
    # bound tr(Σ1 + Σ2) / n of the mean term (the covariance term's bias is of the same order). And the
    # mean absolute error must shrink from n = 250 to n = 4000.
    g = torch.Generator().manual_seed(2)
    c1, c2 = _random_psd(3, g) + 0.1 * torch.eye(3, dtype=torch.float64), _random_psd(3, g)
    mu1 = torch.zeros(3, dtype=torch.float64)
    mu2 = torch.tensor([1.0, -0.5, 0.2], dtype=torch.float64)
    true = M.gaussian_frechet(mu1, c1, mu2, c2).item()
    l1, l2 = torch.linalg.cholesky(c1), torch.linalg.cholesky(c2)
    R = 10
    est = {}
    for n in (250, 4000):
        est[n] = torch.stack(
            [
                M.frechet_distance(
                    mu1 + torch.randn(n, 3, generator=g, dtype=torch.float64) @ l1.T,
                    mu2 + torch.randn(n, 3, generator=g, dtype=torch.float64) @ l2.T,
                )
                for _ in range(R)
            ]
        )
    se = est[4000].std().item() / math.sqrt(R)
    bias = (c1.trace() + c2.trace()).item() / 4000
    assert abs(est[4000].mean().item() - true) < 3 * se + bias
    assert (est[4000] - true).abs().mean() < (est[250] - true).abs().mean()


def test_shift_only_moves_mean_term():
    x = torch.randn(500, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    delta = torch.tensor([1.0, 2.0, 0.0, -1.0], dtype=torch.float64)
    assert M.frechet_distance(x, x + delta).item() == pytest.approx(6.0, rel=1e-9)
    assert M.frechet_distance(x, x).item() == pytest.approx(0.0, abs=1e-9)


def test_fid_with_callable_and_digits_features():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(100, 1, 2, 2, generator=g, dtype=torch.float64)
    y = torch.randn(120, 1, 2, 2, generator=g, dtype=torch.float64) + 0.3
    got = M.fid(x, y, features=lambda t: t.flatten(1), batch_size=7)
    assert got.item() == pytest.approx(M.frechet_distance(x.flatten(1), y.flatten(1)).item(), rel=1e-12)
    from probgen.data import digits

    real, _ = digits("test")
    train, _ = digits("train")
    noise = torch.rand(364, 1, 8, 8, generator=g) * 2 - 1
    # real-vs-real is far closer than real-vs-noise under the shipped features
    assert M.fid(real, train).item() < 0.1 * M.fid(real, noise).item()


def test_errors():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="same number of features"):
        M.frechet_distance(x, torch.randn(10, 4))
    with pytest.raises(ValueError, match="at least 2 samples"):
        M.frechet_distance(x[:1], x)
    with pytest.raises(ValueError, match=r"cov2 must have shape \(3, 3\)"):
        M.gaussian_frechet(torch.zeros(3), torch.eye(3), torch.zeros(3), torch.eye(2))
    with pytest.raises(ValueError, match="unknown features 'vgg'; valid choices: 'digits', 'inception', 'mnist', or a callable"):
        M.fid(x, x, features="vgg")
    with pytest.raises(ValueError, match=r"features must map .* to a \(B, F\) tensor"):
        M.fid(x, x, features=lambda t: t.sum(-1))


def test_inception_features_are_never_downloaded(tmp_path):
    """Without torch-fidelity (or without its weights on disk) the InceptionV3 path refuses clearly."""
    import importlib.util

    from probgen.metrics import fid
    from probgen.metrics.inception import inception_weights_path

    x = torch.zeros(4, 1, 8, 8)
    if importlib.util.find_spec("torch_fidelity") is None:
        with pytest.raises(ImportError, match="needs torch-fidelity.*features='digits'"):
            fid(x, x, features="inception")
    else:
        with pytest.raises(FileNotFoundError, match="never downloads"):
            inception_weights_path(tmp_path / "missing.pth")
