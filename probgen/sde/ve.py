"""Variance-exploding SDE (the continuous limit of SMLD / NCSN).

.. math::

    dx = \\sqrt{\\frac{d\\,\\sigma(t)^2}{dt}}\\,dw
       = \\sigma(t)\\sqrt{2 \\log(\\sigma_{max} / \\sigma_{min})}\\,dw, \\qquad
    \\sigma(t) = \\sigma_{min} (\\sigma_{max} / \\sigma_{min})^t,

with marginal ``N(x_0, sigma(t)^2 I)`` and prior ``N(0, sigma_max^2 I)``. As in score_sde_pytorch the
marginal standard deviation is ``sigma(t)`` itself: the exact transition variance from ``t = 0`` is
``sigma(t)^2 - sigma_min^2``, so ``marginal`` treats the data as already perturbed by
``N(0, sigma_min^2 I)`` (the difference is ``sigma_min^2``, negligible for small ``sigma_min``).

Reference: Song et al. (2021), arXiv:2011.13456, eq. (9) and (30); Song & Ermon (2019),
arXiv:1907.05600 for the SMLD discretisation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from probgen._checks import check_positive
from probgen.sde.base import SDE, _check_t_for

__all__ = ["VESDE"]


class VESDE(SDE):
    """Variance-exploding SDE ``dx = sigma(t) sqrt(2 log(sigma_max / sigma_min)) dw`` on ``[0, 1]``.

    Args:
        sigma_min: ``sigma(0) > 0``.
        sigma_max: ``sigma(1) > sigma_min``.

    Shapes: ``x: (B, *event)``, ``t: (B,)``.

    Reference: Song et al. (2021), arXiv:2011.13456.

    Example:
        >>> sde = VESDE(sigma_min=0.01, sigma_max=50.0)
        >>> [round(v, 3) for v in sde.marginal_std(torch.tensor([0.0, 1.0])).tolist()]
        [0.01, 50.0]
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        sigma_min = check_positive("sigma_min", sigma_min)
        sigma_max = check_positive("sigma_max", sigma_max)
        if sigma_max <= sigma_min:
            raise ValueError(
                f"sigma_max must be > sigma_min, got sigma_min={sigma_min:g}, sigma_max={sigma_max:g}"
            )
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self._log_ratio = math.log(sigma_max / sigma_min)

    def config(self) -> dict[str, float]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def sigma(self, t: Tensor) -> Tensor:
        """Noise level ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``: ``(B,)`` -> ``(B,)``."""
        return self._sigma(_check_t_for(self, t))

    def _sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def time_of_sigma(self, sigma: Tensor) -> Tensor:
        """The time with ``sigma(t) = sigma``, clamped to ``[0, T]``."""
        return (torch.log(sigma / self.sigma_min) / self._log_ratio).clamp(0.0, self.T)

    def f(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.zeros_like(x)

    def g(self, t: Tensor) -> Tensor:
        return self._sigma(t) * math.sqrt(2.0 * self._log_ratio)

    def mean_scale(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def std(self, t: Tensor) -> Tensor:
        return self._sigma(t)

    def step_coefficients(self, x: Tensor, t: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        # SMLD step x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z; sigma_{-1} = 0 below t = dt.
        prev = t - dt
        sigma_prev = torch.where(prev >= 0, self._sigma(prev.clamp_min(0.0)), torch.zeros_like(t))
        g = (self._sigma(t) ** 2 - sigma_prev**2).clamp_min(0.0).sqrt()
        return torch.zeros_like(x), g
