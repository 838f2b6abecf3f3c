"""Variance-preserving SDE (the continuous limit of DDPM).

.. math::

    dx = -\\tfrac12 \\beta(t) x\\,dt + \\sqrt{\\beta(t)}\\,dw, \\qquad
    \\beta(t) = \\beta_{min} + t(\\beta_{max} - \\beta_{min}),

with ``p_t(x_t | x_0) = N(alpha(t) x_0, (1 - alpha(t)^2) I)``,
``log alpha(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2`` and prior ``N(0, I)``.

Reference: Song et al. (2021), arXiv:2011.13456, eqs. (11) and (29); Ho, Jain, Abbeel (2020),
arXiv:2006.11239 for the discretisation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from probgen._checks import check_nonnegative, check_positive
from probgen.ops.shapes import append_dims
from probgen.sde.base import SDE, _check_t_for

__all__ = ["VPSDE"]


def _check_betas(beta_min: Any, beta_max: Any) -> tuple[float, float]:
    beta_min = check_nonnegative("beta_min", beta_min)
    beta_max = check_positive("beta_max", beta_max)
    if beta_max <= beta_min:
        raise ValueError(f"beta_max must be > beta_min, got beta_min={beta_min:g}, beta_max={beta_max:g}")
    return beta_min, beta_max


class VPSDE(SDE):
    """Variance-preserving SDE ``dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw`` on ``[0, 1]``.

    Args:
        beta_min: ``beta(0) >= 0``.
        beta_max: ``beta(1) > beta_min``.

    Shapes: ``x: (B, *event)``, ``t: (B,)``.

    Reference: Song et al. (2021), "Score-Based Generative Modeling through SDEs", arXiv:2011.13456.

    Example:
        >>> sde = VPSDE()
        >>> mean, std = sde.marginal(torch.ones(2, 3), torch.tensor([0.0, 1.0]))
        >>> std.shape
        torch.Size([2])
        >>> round(float(std[0]), 6)
        0.0
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min, self.beta_max = _check_betas(beta_min, beta_max)

    def config(self) -> dict[str, float]:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max}

    @property
    def prior_std(self) -> float:
        return 1.0

    def beta(self, t: Tensor) -> Tensor:
        """Noise rate ``beta(t) = beta_min + t (beta_max - beta_min)``: ``(B,)`` -> ``(B,)``."""
        return self._beta(_check_t_for(self, t))

    def _beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _log_mean_coeff(self, t: Tensor) -> Tensor:
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def _time_of_log_alpha(self, log_alpha: Tensor) -> Tensor:
        # solve (beta_max - beta_min)/4 t^2 + beta_min/2 t + log_alpha = 0 for t >= 0
        delta = self.beta_max - self.beta_min
        return (-0.5 * self.beta_min + (0.25 * self.beta_min**2 - delta * log_alpha).sqrt()) / (0.5 * delta)

    def time_of_sigma(self, sigma: Tensor) -> Tensor:
        """The time with ``std(t) / mean_scale(t) = sigma`` (closed form; σ-space samplers), clamped to ``[0, T]``."""
        return self._time_of_log_alpha(-0.5 * torch.log1p(sigma**2)).clamp(0.0, self.T)

    def f(self, x: Tensor, t: Tensor) -> Tensor:
        return -0.5 * append_dims(self._beta(t), x.dim()) * x

    def g(self, t: Tensor) -> Tensor:
        return self._beta(t).sqrt()

    def mean_scale(self, t: Tensor) -> Tensor:
        return self._log_mean_coeff(t).exp()

    def std(self, t: Tensor) -> Tensor:
        return (-torch.expm1(2.0 * self._log_mean_coeff(t))).clamp_min(0.0).sqrt()

    def step_coefficients(self, x: Tensor, t: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        # DDPM step x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z with beta_i = beta(t) dt.
        beta_i = (self._beta(t) * dt).clamp(max=1.0)
        f = append_dims(torch.sqrt(1.0 - beta_i) - 1.0, x.dim()) * x
        return f, beta_i.sqrt()

    def corrector_alpha(self, t: Tensor, dt: float) -> Tensor:
        return 1.0 - (self._beta(t) * dt).clamp(max=1.0)
