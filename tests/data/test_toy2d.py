"""Tests of probgen.data.toy2d: seeded generators, exact densities (normalization, agreement with samples,
gradients, independent closed forms) and the Monte Carlo entropy."""

from __future__ import annotations

import math

import pytest
import torch

from probgen.data import TOY2D_NAMES, TOY2D_WITH_DENSITY, toy2d, toy2d_entropy, toy2d_log_prob

# half-width of a square holding all but a negligible (< 1e-6) part of each density's mass:
# 8gaussians: radius 2*sqrt(2) + 7 sd (0.354) < 5.3; rings: 3 + 7 * 0.08; circles: 3 + 7 * 0.24 < 4.7.
EXTENT = {"8gaussians": 5.5, "checkerboard": 4.0, "rings": 3.75, "circles": 5.0}
# grid steps for integrals: at least 8 steps per noise sd (checkerboard: aligned with the squares)
STEP = {"8gaussians": 0.025, "checkerboard": 0.05, "rings": 0.01, "circles": 0.025}


def _grid(half: float, step: float) -> tuple[torch.Tensor, float]:
    """Midpoints of a square grid on [-half, half]^2 and the cell area."""
    num = round(2 * half / step)
    centers = -half + step * (torch.arange(num, dtype=torch.float64) + 0.5)
    xx, yy = torch.meshgrid(centers, centers, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=-1), step**2


# ----------------------------------------------------------------------------------------------- generators
@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_generator_shape_seed_dtype(name):
    x = toy2d(name, 500, seed=3)
    assert x.shape == (500, 2) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert torch.isfinite(x).all()
    assert torch.equal(x, toy2d(name, 500, seed=3))
    assert not torch.equal(x, toy2d(name, 500, seed=4))
    x64 = toy2d(name, 500, seed=3, dtype=torch.float64, device="cpu")
    assert x64.dtype == torch.float64
    torch.testing.assert_close(x64.float(), x)


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_generator_global_rng_when_seed_is_none(name):
    torch.manual_seed(11)
    a, b = toy2d(name, 50), toy2d(name, 50)
    torch.manual_seed(11)
    assert torch.equal(a, toy2d(name, 50))
    assert not torch.equal(a, b)  # the global RNG advanced


# closed-form means: symmetric sets have mean 0; moons: upper arc (cos, sin) has mean (0, 2/pi), lower arc
# (1 - cos, 1/2 - sin) has mean (1, 1/2 - 2/pi), averaged then x 2 + (-1, -0.2) -> (0, 0.3);
# swissroll: t ~ U[1.5 pi, 4.5 pi], E[t cos t] = [t sin t + cos t]/(3 pi) = 2, E[t sin t] = [sin t - t cos t]/(3 pi)
# = 2/(3 pi), divided by 5.
MEANS = {
    "8gaussians": (0.0, 0.0),
    "checkerboard": (0.0, 0.0),
    "rings": (0.0, 0.0),
    "circles": (0.0, 0.0),
    "2spirals": (0.0, 0.0),
    "pinwheel": (0.0, 0.0),
    "moons": (0.0, 0.3),
    "swissroll": (0.4, 2.0 / (15.0 * math.pi)),
}


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_generator_mean_matches_closed_form(name):
    n = 100_000
    x = toy2d(name, n, seed=5, dtype=torch.float64)
    stderr = x.std(0) / math.sqrt(n)  # CLT standard error of the sample mean; 4 SE per coordinate
    assert ((x.mean(0) - torch.tensor(MEANS[name], dtype=torch.float64)).abs() < 4 * stderr).all()


def test_generator_errors():
    with pytest.raises(ValueError, match=r"unknown name 'spiral'; valid choices: '8gaussians', 'checkerboard'"):
        toy2d("spiral", 10)
    with pytest.raises(ValueError, match=r"n must be >= 1, got 0"):
        toy2d("rings", 0)
    with pytest.raises(TypeError, match=r"n must be an integer"):
        toy2d("rings", 10.0)
    with pytest.raises(ValueError, match=r"seed must be >= 0"):
        toy2d("rings", 10, seed=-1)
    with pytest.raises(TypeError, match=r"dtype must be torch.float32 or torch.float64"):
        toy2d("rings", 10, dtype=torch.int64)


# ------------------------------------------------------------------------------------------------- densities
def test_log_prob_errors():
    with pytest.raises(ValueError, match=r"'moons' has no closed-form density; sets with one: '8gaussians', "
                                         r"'checkerboard', 'rings', 'circles'"):
        toy2d_log_prob("moons", torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"unknown name 'ring'"):
        toy2d_log_prob("ring", torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2\), got \(3, 3\)"):
        toy2d_log_prob("rings", torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"x contains 1 NaN"):
        toy2d_log_prob("rings", torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor"):
        toy2d_log_prob("rings", [[0.0, 0.0]])
    with pytest.raises(ValueError, match=r"has no closed-form density"):
        toy2d_entropy("swissroll")


@pytest.mark.parametrize("name", TOY2D_WITH_DENSITY)
def test_density_integrates_to_one(name):
    x, area = _grid(EXTENT[name], STEP[name])
    mass = float(toy2d_log_prob(name, x).exp().sum() * area)
    # midpoint rule: the checkerboard grid aligns with the squares (exact); the smooth densities are Gaussian
    # across r with sd >= 8 grid steps, where the midpoint error is far below 1e-6; the box holds 1 - 1e-6.
    assert abs(mass - 1.0) < 1e-3


@pytest.mark.parametrize("name", TOY2D_WITH_DENSITY)
def test_density_matches_histogram_of_samples(name):
    n, bins_per_side, sub = 200_000, 16, 20
    half = EXTENT[name]
    width = 2 * half / bins_per_side
    # bin probabilities: midpoint rule on a sub x sub grid inside each bin
    x, area = _grid(half, width / sub)
    dens = toy2d_log_prob(name, x).exp() * area
    p = dens.reshape(bins_per_side, sub, bins_per_side, sub).sum((1, 3)).flatten()
    assert abs(float(p.sum()) - 1.0) < 1e-3
    # sample frequencies in the same bins
    samples = toy2d(name, n, seed=123, dtype=torch.float64)
    idx = torch.floor((samples + half) / width).long()
    inside = ((idx >= 0) & (idx < bins_per_side)).all(-1)
    assert inside.double().mean() > 1 - 1e-3
    counts = torch.bincount(idx[inside, 0] * bins_per_side + idx[inside, 1], minlength=bins_per_side**2)
    p_hat = counts.double() / n
    # binomial standard error of each frequency, for bins with p > 1e-3 (n p >= 200: normal approximation).
    # With m such bins tested at once, a Bonferroni bound keeps the family-wise false-alarm rate at 1e-3:
    # z = Phi^-1(1 - 1e-3 / (2 m)), about 4.3 to 4.5 sd here (never below the 4 sd of a single bin).
    big = p > 1e-3
    se = torch.sqrt(p * (1 - p) / n)
    m = int(big.sum())
    assert m >= 8
    z_crit = max(4.0, float(torch.special.ndtri(torch.tensor(1 - 1e-3 / (2 * m), dtype=torch.float64))))
    assert ((p_hat - p).abs()[big] < z_crit * se[big]).all()
    # where the density is zero (the checkerboard's white squares) no sample may fall
    assert (counts[p == 0] == 0).all()


def test_8gaussians_matches_torch_mixture():
    angle = torch.arange(8, dtype=torch.float64) * math.pi / 4
    centers = 2 * math.sqrt(2) * torch.stack([angle.cos(), angle.sin()], -1)
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.full((8,), 1 / 8, dtype=torch.float64)),
        torch.distributions.Independent(torch.distributions.Normal(centers, 0.5 / math.sqrt(2)), 1),
    )
    x = 4 * torch.randn(100, 2, dtype=torch.float64)
    torch.testing.assert_close(toy2d_log_prob("8gaussians", x), mix.log_prob(x))


@pytest.mark.parametrize(
    ("name", "radii", "std"), [("rings", (0.75, 1.5, 2.25, 3.0), 0.08), ("circles", (1.5, 3.0), 0.24)]
)
def test_ring_density_equals_angle_average_of_gaussians(name, radii, std):
    # independent check of the Bessel closed form: average N(x; R (cos a, sin a), s^2 I) over the angle a
    # with the trapezoid rule on a periodic integrand (spectrally accurate with 4096 nodes)
    x = torch.cat([torch.rand(200, 2, dtype=torch.float64) * 7 - 3.5, torch.zeros(1, 2, dtype=torch.float64)])
    a = torch.arange(4096, dtype=torch.float64) * (2 * math.pi / 4096)
    dens = torch.zeros(len(x), dtype=torch.float64)
    for radius in radii:
        mu = radius * torch.stack([a.cos(), a.sin()], -1)  # (A, 2)
        sq = (x.unsqueeze(1) - mu).pow(2).sum(-1)
        dens += torch.exp(-0.5 * sq / std**2).mean(1) / (2 * math.pi * std**2) / len(radii)
    got = toy2d_log_prob(name, x).exp()
    torch.testing.assert_close(got, dens, rtol=1e-9, atol=1e-300)


def test_checkerboard_values():
    x = torch.tensor([[1.0, 1.0], [1.0, 3.0], [-3.0, -3.0], [-3.0, 3.0], [4.0, 0.5], [0.0, 0.0], [-4.0, -4.0]])
    lp = toy2d_log_prob("checkerboard", x)
    expected = [-math.log(32), -math.inf, -math.log(32), -math.inf, -math.inf, -math.log(32), -math.log(32)]
    assert lp.tolist() == pytest.approx(expected)


@pytest.mark.parametrize("name", ["8gaussians", "rings", "circles"])
def test_log_prob_gradient_matches_finite_differences(name):
    x = (3 * torch.rand(6, 2, dtype=torch.float64) - 1.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda z: toy2d_log_prob(name, z), (x,))


def test_rings_gradient_at_origin_is_zero():
    # the density is radially symmetric and smooth at r = 0, so its gradient there is exactly 0 (not NaN)
    x = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    toy2d_log_prob("rings", x).sum().backward()
    assert torch.equal(x.grad, torch.zeros(1, 2, dtype=torch.float64))


def test_checkerboard_is_differentiable():
    x = torch.tensor([[1.0, 1.0]], requires_grad=True)
    toy2d_log_prob("checkerboard", x).sum().backward()
    assert torch.equal(x.grad, torch.zeros(1, 2))


@pytest.mark.parametrize("name", TOY2D_WITH_DENSITY)
def test_log_prob_keeps_dtype_and_agrees_in_float32(name):
    x64 = toy2d(name, 1000, seed=0, dtype=torch.float64)
    lp32 = toy2d_log_prob(name, x64.float())
    assert lp32.dtype == torch.float32 and lp32.shape == (1000,)
    torch.testing.assert_close(lp32.double(), toy2d_log_prob(name, x64), rtol=1e-4, atol=1e-4)
    lp_far = toy2d_log_prob(name, torch.tensor([[50.0, -50.0], [math.inf, 0.0]]))
    assert lp_far[0] < -1000 and lp_far[1] == -math.inf


# --------------------------------------------------------------------------------------------------- entropy
@pytest.mark.parametrize("name", ["8gaussians", "rings", "circles"])
def test_entropy_agrees_with_grid_integral(name):
    h, se = toy2d_entropy(name, num_samples=200_000, seed=1)
    assert 0 < se < 0.01
    x, area = _grid(EXTENT[name], STEP[name])
    lp = toy2d_log_prob(name, x)
    h_grid = float(-(lp.exp() * lp).nan_to_num(0.0).sum() * area)
    # MC error: 4 standard errors; the grid integral's own error is < 1e-4 (see test_density_integrates_to_one)
    assert abs(h - h_grid) < 4 * se + 1e-4
    assert toy2d_entropy(name, num_samples=200_000, seed=1) == (h, se)  # cached and deterministic


def test_checkerboard_entropy_is_log_32():
    h, se = toy2d_entropy("checkerboard", num_samples=10_000)
    assert h == pytest.approx(math.log(32), abs=1e-12) and se < 1e-12


def test_entropy_errors():
    with pytest.raises(ValueError, match=r"num_samples must be >= 2"):
        toy2d_entropy("rings", num_samples=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", TOY2D_WITH_DENSITY)
def test_cuda_generation_and_log_prob_stay_on_device(name):
    x = toy2d(name, 1000, seed=0, device="cuda", dtype=torch.float64)
    assert x.device.type == "cuda" and torch.equal(x.cpu(), toy2d(name, 1000, seed=0, dtype=torch.float64))
    lp = toy2d_log_prob(name, x)
    assert lp.device.type == "cuda"
    torch.testing.assert_close(lp.cpu(), toy2d_log_prob(name, x.cpu()))
