"""MMD², its permutation test and KID: closed forms, unbiasedness under H0, power, blocking, errors."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

import probgen.metrics as M
mmd_module = importlib.import_module("probgen.metrics.two_sample")

KERNEL_KW = [
    ("gaussian", {}),
    ("imq", {}),
    ("polynomial", {}),
]


def _naive_mmd(x, y, k, unbiased):
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m, n = x.shape[0], y.shape[0]
    if unbiased:
        return (kxx.sum() - kxx.trace()) / (m * (m - 1)) + (kyy.sum() - kyy.trace()) / (n * (n - 1)) - 2 * kxy.mean()
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()


def test_closed_form_two_point_samples():
    # x = {0, 0}, y = {1, 1}, Gaussian kernel h = 1: k(x, x') = 1, k(y, y') = 1, k(x, y) = exp(-1/2)
    x = torch.zeros(2, 1, dtype=torch.float64)
    y = torch.ones(2, 1, dtype=torch.float64)
    want = 2.0 - 2.0 * math.exp(-0.5)
    for unbiased in (True, False):
        got = M.mmd(x, y, bandwidth=1.0, unbiased=unbiased)
        assert got.item() == pytest.approx(want, rel=1e-12)
    # IMQ: k(x, y) = (1 + 1)^(-1/2)
    assert M.mmd(x, y, kernel="imq", bandwidth=1.0).item() == pytest.approx(2.0 - 2.0 / math.sqrt(2.0), rel=1e-12)


@pytest.mark.parametrize("kernel,kw", KERNEL_KW)
@pytest.mark.parametrize("unbiased", [True, False])
def test_matches_naive_formula_and_blocking(kernel, kw, unbiased, monkeypatch):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(37, 3, generator=g, dtype=torch.float64)
    y = torch.randn(23, 3, generator=g, dtype=torch.float64) + 0.5
    h = M.median_bandwidth(torch.cat([x, y]))
    k = mmd_module._make_kernel(kernel, h, degree=3, gamma=None, coef0=1.0, num_features=3)
    want = _naive_mmd(x, y, k, unbiased)
    got = M.mmd(x, y, kernel=kernel, unbiased=unbiased, **kw)
    assert got.item() == pytest.approx(want.item(), rel=1e-10, abs=1e-14)
    monkeypatch.setattr(mmd_module, "_BLOCK", 5)  # force many off-diagonal and diagonal blocks
    assert M.mmd(x, y, kernel=kernel, unbiased=unbiased, **kw).item() == pytest.approx(want.item(), rel=1e-10, abs=1e-14)
    stat, _ = M.mmd_test(x, y, kernel=kernel, unbiased=unbiased, num_permutations=3)
    assert stat.item() == pytest.approx(want.item(), rel=1e-9, abs=1e-13)


def test_callable_kernel_equals_named_kernel():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(30, 2, generator=g), torch.randn(40, 2, generator=g)

    def gauss(a, b):
        return torch.exp(-torch.cdist(a, b).pow(2) / (2 * 0.7**2))

    assert M.mmd(x, y, kernel=gauss).item() == pytest.approx(M.mmd(x, y, bandwidth=0.7).item(), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("kernel", ["gaussian", "imq", "polynomial"])
def test_unbiased_mean_zero_under_null_and_biased_is_positive(kernel):
    # R independent replicates of two samples from one distribution; the U-statistic has mean exactly 0
    # (with the pooled median bandwidth too: the bandwidth is invariant to relabelling), so the replicate
    # mean must lie within 3 standard errors (sample std / sqrt(R)) of 0. The V-statistic is >= 0 always
    # and biased upwards, so its replicate mean is many SEs above 0 — the check can fail.
    g = torch.Generator().manual_seed(3)
    R, n = 300, 40
    u, v = [], []
    for _ in range(R):
        x = torch.randn(n, 2, generator=g, dtype=torch.float64)
        y = torch.randn(n, 2, generator=g, dtype=torch.float64)
        u.append(M.mmd(x, y, kernel=kernel))
        v.append(M.mmd(x, y, kernel=kernel, unbiased=False))
    u, v = torch.stack(u), torch.stack(v)
    se_u = u.std() / math.sqrt(R)
    assert abs(u.mean().item()) < 3 * se_u.item()
    assert bool((v >= 0).all())
    assert v.mean().item() > 3 * (v.std() / math.sqrt(R)).item()


def test_permutation_test_detects_small_shift():
    # 0.2 sigma mean shift, n = 2000 per sample: with 200 permutations the smallest attainable p-value is
    # 1/201 ≈ 0.005, and the test must reach p < 0.01.
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2000, 2, generator=g)
    y = torch.randn(2000, 2, generator=g)
    y[:, 0] += 0.2
    stat, p = M.mmd_test(x, y, num_permutations=200, generator=g, batch_size=100)
    assert stat.item() > 0
    assert p.item() < 0.01


def test_permutation_p_values_are_calibrated_under_null():
    # Under H0 the permutation p-value is (super-)uniform: P(p <= 0.1) <= 0.1 + O(1/B). Over R = 120
    # replicates the rejection rate has SE sqrt(0.1 * 0.9 / R) ≈ 0.027; allow 3 SE above 0.1.
    g = torch.Generator().manual_seed(5)
    R = 120
    rejections = 0
    for _ in range(R):
        x = torch.randn(25, 2, generator=g, dtype=torch.float64)
        y = torch.randn(25, 2, generator=g, dtype=torch.float64)
        _, p = M.mmd_test(x, y, num_permutations=49, generator=g)
        assert 0 < p.item() <= 1
        rejections += int(p.item() <= 0.1)
    assert rejections / R < 0.1 + 3 * math.sqrt(0.1 * 0.9 / R)


def test_kid_equals_polynomial_mmd_on_full_subsets():
    # with subset_size = n each "subset" is a permutation of the whole set, so every subset value is the
    # unbiased polynomial MMD² of the full sets: mean = that value, std = 0
    g = torch.Generator().manual_seed(6)
    x = torch.randn(50, 4, generator=g, dtype=torch.float64)
    y = torch.randn(50, 4, generator=g, dtype=torch.float64) * 1.3
    mean, std = M.kid(x, y, num_subsets=4, subset_size=50, generator=g)
    want = M.mmd(x, y, kernel="polynomial", degree=3, coef0=1.0)
    assert mean.item() == pytest.approx(want.item(), rel=1e-10)
    assert std.item() == pytest.approx(0.0, abs=1e-12)


def test_kid_unbiased_under_null_and_positive_under_shift():
    # replicate mean within 3 SE of 0 under H0 (as for MMD); a 1-sigma shift gives a KID many SEs above 0
    g = torch.Generator().manual_seed(7)
    R = 100
    vals = torch.stack(
        [
            M.kid(torch.randn(120, 8, generator=g), torch.randn(120, 8, generator=g), num_subsets=5,
                  subset_size=60, generator=g)[0]
            for _ in range(R)
        ]
    ).double()
    assert abs(vals.mean().item()) < 3 * (vals.std() / math.sqrt(R)).item()
    shifted, std = M.kid(torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g) + 1.0,
                         num_subsets=20, subset_size=100, generator=g)
    assert shifted.item() > 3 * vals.std().item()


def test_kid_generator_reproducible_and_dtype_kept():
    x, y = torch.randn(80, 3), torch.randn(90, 3)
    a = M.kid(x, y, num_subsets=7, subset_size=30, generator=torch.Generator().manual_seed(0))
    b = M.kid(x, y, num_subsets=7, subset_size=30, generator=torch.Generator().manual_seed(0))
    assert a[0].item() == b[0].item() and a[1].item() == b[1].item()
    assert a[0].dtype == torch.float32


def test_median_bandwidth_ignores_self_pairs():
    z = torch.tensor([[0.0], [1.0], [3.0]])  # distances 1, 2, 3 -> median 2
    assert M.median_bandwidth(z).item() == pytest.approx(2.0)
    assert M.median_bandwidth(torch.zeros(4, 2)).item() == 1.0  # degenerate: falls back to 1


def test_errors():
    x, y = torch.randn(10, 2), torch.randn(10, 2)
    with pytest.raises(ValueError, match="unknown kernel 'rbf'; valid choices: 'gaussian', 'imq', 'polynomial'"):
        M.mmd(x, y, kernel="rbf")
    with pytest.raises(ValueError, match="same number of features"):
        M.mmd(x, torch.randn(10, 3))
    with pytest.raises(ValueError, match="at least 2 samples"):
        M.mmd(x[:1], y)
    with pytest.raises(ValueError, match="must have 2 dimensions"):
        M.mmd(torch.randn(10), y)
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        M.mmd(x, y, bandwidth=-1.0)
    with pytest.raises(ValueError, match="bandwidth is only used"):
        M.mmd(x, y, kernel="polynomial", bandwidth=1.0)
    with pytest.raises(ValueError, match="bandwidth is only used"):
        M.mmd(x, y, kernel=lambda a, b: a @ b.T, bandwidth=1.0)
    with pytest.raises(ValueError, match="coef0 must be >= 0"):
        M.kid(x, y, coef0=-1.0)
    with pytest.raises(TypeError, match="same dtype"):
        M.mmd(x, y.double())
    with pytest.raises(ValueError, match="num_permutations must be >= 1"):
        M.mmd_test(x, y, num_permutations=0)
    with pytest.raises(ValueError, match="subset_size must be >= 2"):
        M.kid(x, y, subset_size=1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        M.mmd(x, torch.full((10, 2), float("nan")))
