"""Sub-variance-preserving SDE.

.. math::

    dx = -\\tfrac12 \\beta(t) x\\,dt + \\sqrt{\\beta(t)\\,(1 - e^{-2\\int_0^t \\beta(s) ds})}\\,dw,

with ``p_t(x_t | x_0) = N(alpha(t) x_0, (1 - alpha(t)^2)^2 I)`` (the same ``alpha`` as VP, a smaller
variance) and prior ``N(0, I)``. The forward discretisation is Euler–Maruyama.

Reference: Song et al. (2021), arXiv:2011.13456, eq. (12) and Appendix B.
"""

from __future__ import annotations

import torch
from torch import Tensor

from probgen.sde.vp import VPSDE

__all__ = ["SubVPSDE"]


class SubVPSDE(VPSDE):
    """Sub-VP SDE ``dx = -1/2 beta(t) x dt + sqrt(beta(t) (1 - alpha(t)^4)) dw`` on ``[0, 1]``.

    ``alpha(t)^4 = exp(-2 beta_min t - (beta_max - beta_min) t^2)``; the marginal standard deviation is
    ``sigma(t) = 1 - alpha(t)^2``, always below VP's ``sqrt(1 - alpha(t)^2)``.

    Args:
        beta_min: ``beta(0) >= 0``.
        beta_max: ``beta(1) > beta_min``.

    Reference: Song et al. (2021), arXiv:2011.13456.

    Example:
        >>> sde = SubVPSDE()
        >>> t = torch.tensor([0.5])
        >>> bool(sde.marginal_std(t) < VPSDE().marginal_std(t))
        True
    """

    def time_of_sigma(self, sigma: Tensor) -> Tensor:
        """The time with ``(1 - α²) / α = sigma``: ``α = (√(σ² + 4) - σ) / 2``."""
        alpha = 0.5 * ((sigma**2 + 4.0).sqrt() - sigma)
        return self._time_of_log_alpha(alpha.log()).clamp(0.0, self.T)

    def g(self, t: Tensor) -> Tensor:
        discount = -torch.expm1(4.0 * self._log_mean_coeff(t))
        return (self._beta(t) * discount).clamp_min(0.0).sqrt()

    def std(self, t: Tensor) -> Tensor:
        return -torch.expm1(2.0 * self._log_mean_coeff(t))

    def step_coefficients(self, x: Tensor, t: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        # score_sde_pytorch's subVPSDE has no DDPM-style discretisation: Euler–Maruyama.
        return super(VPSDE, self).step_coefficients(x, t, dt)
