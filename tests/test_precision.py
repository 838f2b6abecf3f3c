"""float32 / float64 consistency and chunking of the likelihood and the ODE sampler.

The problem has a closed form: data ``x0 ~ N(0, s0^2 I_D)`` under the VP SDE keeps Gaussian marginals
``p_t = N(0, v(t) I)`` with ``v(t) = alpha(t)^2 s0^2 + sigma(t)^2``, so the exact score is ``-x / v(t)`` and
``log p_eps(x)`` is known.
"""

from __future__ import annotations

import math

import pytest
import torch

from probgen.diffusion import ode_log_prob
from probgen.flows import Flow
from probgen.samplers import sample_ode
from probgen.sde import VPSDE

S0 = 0.5
D = 3
SDE = VPSDE()


def _variance(t: torch.Tensor) -> torch.Tensor:
    return SDE.marginal_scale(t) ** 2 * S0**2 + SDE.marginal_std(t) ** 2


def _score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return -x / _variance(t)[:, None]


def _exact_log_prob(x: torch.Tensor, eps: float) -> torch.Tensor:
    v = _variance(torch.full((x.shape[0],), eps, dtype=torch.float64))
    return -0.5 * x.double().pow(2).sum(-1) / v - 0.5 * D * torch.log(2 * math.pi * v)


def _points(n: int = 6) -> torch.Tensor:
    return S0 * torch.randn(n, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_ode_log_prob_float32_agrees_with_float64_and_the_closed_form():
    x64 = _points()
    lp64 = ode_log_prob(_score, SDE, x64, rtol=1e-5, atol=1e-5)
    lp32 = ode_log_prob(_score, SDE, x64.float(), rtol=1e-5, atol=1e-5)
    assert lp32.dtype == torch.float32 and lp64.dtype == torch.float64
    exact = _exact_log_prob(x64, 1e-5)
    # The solver controls the local error at rtol * |y| + atol = 1e-5 * (|log p| + 1) per step; over the
    # integration the global error stays within a few times that: ~1e-4 for |log p| ~ 3. float32 adds
    # roundoff of order eps_32 * |log p| * sqrt(#steps) ~ 1.2e-7 * 3 * 10 ~ 4e-6. A tolerance of 1e-3
    # (10x the solver budget) therefore cannot fail for a correct solver, while a dtype bug (a float32
    # cast of the time grid, a float16 step) shows up at >= 1e-2.
    torch.testing.assert_close(lp64, exact, rtol=0, atol=1e-3)
    torch.testing.assert_close(lp32.double(), exact, rtol=0, atol=1e-3)
    torch.testing.assert_close(lp32.double(), lp64, rtol=0, atol=1e-3)


def test_ode_sampler_float32_agrees_with_float64():
    x_init = torch.randn(8, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s64 = sample_ode(_score, SDE, (8, D), x_init=x_init, rtol=1e-5, atol=1e-5).samples
    s32 = sample_ode(_score, SDE, (8, D), x_init=x_init.float(), rtol=1e-5, atol=1e-5).samples
    assert s32.dtype == torch.float32 and s64.dtype == torch.float64
    # the probability-flow map of this linear ODE is x_T -> sqrt(v(eps) / v(T)) x_T (|gain| ~ 0.5):
    # an exact check of the float64 path, then float32 within 100x the solver tolerance (see above)
    gain = torch.sqrt(_variance(torch.tensor([1e-3], dtype=torch.float64)) / _variance(torch.tensor([1.0],
                                                                                                     dtype=torch.float64)))
    torch.testing.assert_close(s64, gain * x_init, rtol=0, atol=1e-3)
    torch.testing.assert_close(s32.double(), s64, rtol=0, atol=1e-3)


@pytest.mark.parametrize("chunk", [3, 7])
def test_ode_log_prob_chunked_equals_unchunked(chunk):
    x = _points(10)
    # fixed-step solver: every point sees the same time grid whatever the chunk, so only summation
    # order can differ: float64 agreement to ~1e-12
    full = ode_log_prob(_score, SDE, x, method="rk4", steps=20)
    chunked = ode_log_prob(_score, SDE, x, method="rk4", steps=20, batch_size=chunk)
    torch.testing.assert_close(chunked, full, rtol=1e-12, atol=1e-12)
    # adaptive solver: the step-size control sees a different batch, so chunks differ within the tolerance
    adaptive_full = ode_log_prob(_score, SDE, x)
    adaptive_chunked = ode_log_prob(_score, SDE, x, batch_size=chunk)
    torch.testing.assert_close(adaptive_chunked, adaptive_full, rtol=0, atol=1e-3)


@pytest.mark.parametrize("kind", ["realnvp", "spline", "maf"])
def test_flow_log_prob_float32_agrees_with_float64(kind):
    torch.manual_seed(0)
    flow = Flow(2, kind, num_layers=2)
    x = torch.randn(16, 2, dtype=torch.float64)
    flow.double()
    lp64 = flow.log_prob(x)
    lp32 = flow.float().log_prob(x.float())
    # a few dozen float32 operations per layer, |log p| ~ 3: relative error ~ 1e-6; 1e-4 absolute is safe
    torch.testing.assert_close(lp32.double(), lp64, rtol=0, atol=1e-4)
