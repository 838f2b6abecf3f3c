r"""The one adapter between the posterior samplers and a diffusion prior (private).

For a model with a noise schedule ``x_t = α(t) x_0 + σ(t) ε`` and a score ``s(x, t) ≈ ∇ log p_t(x)`` it
gives what every sampler of this package uses:

* ``alpha(t)``, ``sigma(t)`` (``(B,)``), the time grid ``T = t_0 > … > t_L = t_min`` and the prior draw;
* ``score(x, t)`` and the denoiser ``x̂₀(x, t) = (x + σ² s)/α`` (Tweedie's formula);
* the ancestral (DDPM posterior) step ``q(x_s | x_t, x_0 = x̂₀)`` between two grid times ``s < t``:

  .. math::

      α_{t|s} = α_t/α_s,\quad σ_{t|s}^2 = σ_t^2 - α_{t|s}^2 σ_s^2,\quad
      μ = \frac{α_{t|s} σ_s^2}{σ_t^2} x_t + \frac{α_s σ_{t|s}^2}{σ_t^2} x̂₀,\quad
      σ̃^2 = \frac{σ_{t|s}^2 σ_s^2}{σ_t^2},

  which equals ``(x_t + σ_{t|s}² s(x_t, t))/α_{t|s}``, so a likelihood score ``g`` is added to the
  score by shifting the mean by ``σ_{t|s}²/α_{t|s} · g``.

Today it reads the models' current public API (``model.score(x, t)``, ``model.sde.marginal_scale`` /
``marginal_std`` / ``prior_std`` / ``T``), which ScoreSDE (any SDE) and DDPM (its matched discrete VP
SDE) both provide; the lead can later point it at the unified denoiser interface in one place.

Reference: Ho, Jain & Abbeel (2020), arXiv:2006.11239, eq. 7; Song et al. (2021), arXiv:2011.13456.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["DiffusionPrior", "is_diffusion"]


def is_diffusion(model: Any) -> bool:
    """Whether ``model`` has a score and a forward SDE (ScoreSDE, DDPM)."""
    sde = getattr(model, "sde", None)
    return callable(getattr(model, "score", None)) and sde is not None and hasattr(sde, "marginal_std")


class DiffusionPrior:
    """``alpha``, ``sigma``, ``score``, ``denoise``, ``ancestral`` and the time grid of a diffusion model."""

    def __init__(self, model: Any, *, dtype: torch.dtype, device: torch.device):
        self.model = model
        self.sde = model.sde
        self.T = float(self.sde.T)
        self.event_shape = tuple(model.event_shape)
        self.dtype, self.device = dtype, device
        num_steps = getattr(model, "num_steps", None)  # DDPM: nothing below step 1
        self.t_min = max(1e-3, 1.0 / num_steps) if isinstance(num_steps, int) else 1e-3
        self.nfe = 0
        self._schedule: dict[float, tuple[float, float]] = {}  # t -> (α_t, σ_t), filled once per grid time

    def times(self, steps: int) -> Tensor:
        """``steps + 1`` times from ``T`` down to ``t_min``, uniform."""
        return torch.linspace(self.T, self.t_min, steps + 1, dtype=self.dtype, device=self.device)

    def _t(self, t: Tensor | float, n: int) -> Tensor:
        return torch.as_tensor(t, dtype=self.dtype, device=self.device).expand(n)

    def _ab(self, t: Tensor | float) -> tuple[float, float]:
        key = float(t)
        if key not in self._schedule:
            one = self._t(key, 1)
            self._schedule[key] = (float(self.sde.marginal_scale(one)), float(self.sde.marginal_std(one)))
        return self._schedule[key]

    def alpha(self, t: Tensor | float, n: int = 1) -> Tensor:
        return torch.full((n,), self._ab(t)[0], dtype=self.dtype, device=self.device)

    def sigma(self, t: Tensor | float, n: int = 1) -> Tensor:
        return torch.full((n,), self._ab(t)[1], dtype=self.dtype, device=self.device)

    def prior(self, num: int, generator: torch.Generator | None) -> Tensor:
        """``x_T ~ N(0, σ_T² I)`` (the SDE's prior)."""
        z = torch.randn((num, *self.event_shape), generator=generator, dtype=self.dtype, device=self.device)
        return z * float(self.sde.prior_std)

    def score(self, x: Tensor, t: Tensor | float) -> Tensor:
        self.nfe += 1
        return self.model.score(x, self._t(t, x.shape[0]))

    def denoise(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Tweedie: ``x̂₀ = (x + σ(t)² s(x, t)) / α(t)``."""
        a, s = self._ab(t)
        return (x + s * s * self.score(x, t)) / a

    def ancestral(self, x: Tensor, x0: Tensor, t: Tensor | float, s: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
        """``(μ, σ̃, c)`` of ``q(x_s | x_t, x̂₀)``: mean ``(B, *event)``, std and guidance weight ``c = σ_{t|s}²/α_{t|s}`` (floats)."""
        (a_t, sd_t), (a_s, sd_s) = self._ab(t), self._ab(s)
        v_t, v_s = sd_t**2, sd_s**2
        a_ts = a_t / a_s
        v_ts = max(v_t - a_ts**2 * v_s, 0.0)
        mean = (a_ts * v_s / v_t) * x + (a_s * v_ts / v_t) * x0
        return mean, torch.tensor((v_ts * v_s / v_t) ** 0.5), torch.tensor(v_ts / a_ts)
