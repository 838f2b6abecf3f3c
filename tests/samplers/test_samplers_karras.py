"""The σ-space samplers' own formulas and entry checks (the family × sampler matrix is in test_every_family.py)."""

from __future__ import annotations

import math

import pytest
import torch

from probgen.samplers import Denoiser, karras_sigmas, sample_euler, sample_heun

DT = torch.float64


def test_heun_step_is_the_edm_formula():
    """One Heun step (Karras et al. 2022, Alg. 1, lines 5–8) by hand."""
    d = Denoiser(lambda x, s: 0.3 * x + s[:, None], sigma_min=0.1, sigma_max=2.0)
    x0 = torch.tensor([[1.0, -2.0]], dtype=DT)
    s0, s1 = 2.0, 0.7
    d0 = (x0 - (0.3 * x0 + s0)) / s0
    x1 = x0 + (s1 - s0) * d0
    d1 = (x1 - (0.3 * x1 + s1)) / s1
    expected = x0 + (s1 - s0) * 0.5 * (d0 + d1)
    out = sample_heun(d, x0, torch.tensor([s0, s1], dtype=DT))
    torch.testing.assert_close(out, expected)


def test_sigma_grid_and_input_errors():
    sig = karras_sigmas(4, 0.002, 80.0, rho=7.0, dtype=DT)
    i = torch.arange(4, dtype=DT)
    expected = (80 ** (1 / 7) + i / 3 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(sig[:-1], expected)
    assert float(sig[-1]) == 0.0
    d = Denoiser(lambda x, s: x, sigma_min=0.1, sigma_max=1.0)
    with pytest.raises(ValueError, match="sigmas must be non-negative and decreasing"):
        sample_euler(d, torch.zeros(2, 1), torch.tensor([0.1, 1.0]))
    with pytest.raises(TypeError, match="model must be a Denoiser"):
        sample_heun(3, torch.zeros(2, 1), sig)
    assert math.isclose(d.sigma_max, 1.0)
