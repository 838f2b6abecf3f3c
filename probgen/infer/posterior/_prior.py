r"""The one adapter between the posterior samplers and a diffusion-type prior (private).

Every diffusion-type family (ScoreSDE with any SDE, DDPM, EDM, flow matching) gives its σ-space
denoiser ``D(x, σ) ≈ E[x_0 | x_0 + σ z = x]`` through ``model.denoiser()``
(:class:`probgen.samplers.Denoiser`; ``x = x_t/α_t``, ``σ = σ_t/α_t``). The samplers of this package
work in that space, so they never see a family's own schedule or prediction:

* the noise levels ``σ_max = σ_0 > … > σ_{N-1} = σ_min > σ_N = 0`` (EDM's, ρ = 7) and the prior draw
  ``x ~ N(0, σ_max² I)``;
* the denoiser ``x̂₀ = D(x, σ)`` and the score ``s = (x̂₀ - x)/σ²`` (Tweedie);
* the ancestral (DDPM posterior) step ``q(x_s | x_t, x_0 = x̂₀)`` between two levels ``σ_s < σ_t``:

  .. math::

      μ = x̂₀ + \frac{σ_s^2}{σ_t^2}(x_t - x̂₀) = x_t + (σ_t^2 - σ_s^2)\, s(x_t),\qquad
      σ̃^2 = \frac{σ_s^2 (σ_t^2 - σ_s^2)}{σ_t^2},

  so a likelihood score ``g = ∇ log p(y | x_t)`` is added to the score by shifting the mean by
  ``c g`` with ``c = σ_t² - σ_s²``. (For a VP model this is exactly its ancestral step, rescaled by ``α``.)

Standardized models (``probgen.ops.standardize``: ``x = loc + scale ⊙ z``) are priors on ``z``: the
samplers run on ``z`` and the caller maps the likelihood through ``from_standard``
(:func:`affine_of`).

Reference: Ho, Jain & Abbeel (2020), arXiv:2006.11239, eq. 7; Karras et al. (2022), arXiv:2206.00364.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from probgen.samplers import karras_sigmas

__all__ = ["DiffusionPrior", "is_diffusion", "affine_of"]


def is_diffusion(model: Any) -> bool:
    """Whether ``model`` gives a σ-space denoiser (``model.denoiser()``: DDPM, ScoreSDE, EDM, flow matching)."""
    return callable(getattr(model, "denoiser", None)) and getattr(model, "event_shape", None) is not None


def affine_of(model: Any) -> tuple[Tensor, Tensor] | None:
    """``(loc, scale)`` of a standardized model (``x = loc + scale ⊙ z``), else ``None``."""
    if callable(getattr(model, "from_standard", None)) and callable(getattr(model, "to_standard", None)):
        return model.loc, model.scale
    return None


class DiffusionPrior:
    """Noise levels, prior draw, denoiser, score and ancestral step of a model's σ-space denoiser.

    Args:
        model: a model with ``denoiser()`` and ``event_shape``.
        dtype, device: of the draws.
        clip_x0: ``(low, high)``: clamp every ``x̂₀`` to the data range (DDPM's ``clip_x0``), or ``None``.
            A trained ε-network's ``x̂₀ = x - σ ε̂`` at large ``σ`` (and its Jacobian, which the guided
            methods multiply by ``σ²``) carries ``σ`` times the network's error; clamping keeps the
            guided chains of images finite (Ho et al. 2020 clip the same way).

    Attributes:
        denoiser: ``model.denoiser()``; sigma_min, sigma_max: its range; event_shape.
    """

    def __init__(self, model: Any, *, dtype: torch.dtype, device: torch.device,
                 clip_x0: tuple[float, float] | None = None):
        self.denoiser = model.denoiser()
        self.clip_x0 = clip_x0
        self.sigma_min, self.sigma_max = float(self.denoiser.sigma_min), float(self.denoiser.sigma_max)
        self.event_shape = tuple(model.event_shape)
        self.dtype, self.device = dtype, device
        self._calls = 0
        self._levels: dict[tuple[float, int], Tensor] = {}  # (σ, B) -> σ as a (B,) tensor, built once

    @property
    def nfe(self) -> int:
        """Network evaluations since construction."""
        return self._calls

    def sigmas(self, steps: int) -> list[float]:
        """``steps`` noise levels from ``σ_max`` down to ``σ_min``, then ``0`` (Python floats, ``steps + 1``)."""
        return karras_sigmas(steps, self.sigma_min, self.sigma_max, dtype=torch.float64).tolist()

    def prior(self, num: int, generator: torch.Generator | None) -> Tensor:
        """``x ~ N(0, σ_max² I)``: ``(num, *event)``."""
        z = torch.randn((num, *self.event_shape), generator=generator, dtype=self.dtype, device=self.device)
        return z * self.sigma_max

    def level(self, sigma: float, n: int) -> Tensor:
        """``σ`` as a ``(n,)`` tensor (cached: no allocation per step)."""
        key = (sigma, n)
        out = self._levels.get(key)
        if out is None:
            out = self._levels[key] = torch.full((n,), sigma, dtype=self.dtype, device=self.device)
        return out

    def denoise(self, x: Tensor, sigma: float) -> Tensor:
        """``x̂₀ = D(x, σ)`` for ``x: (B, *event)``."""
        self._calls += 1
        x0 = self.denoiser(x, self.level(sigma, x.shape[0]))
        return x0 if self.clip_x0 is None else x0.clamp(*self.clip_x0)

    def score(self, x: Tensor, sigma: float) -> Tensor:
        """``∇ log p_σ(x) = (D(x, σ) - x)/σ²``."""
        return (self.denoise(x, sigma) - x) / (sigma * sigma)

    @staticmethod
    def ancestral(x: Tensor, x0: Tensor, sigma: float, sigma_next: float) -> tuple[Tensor, float, float]:
        """``(μ, σ̃, c)`` of ``q(x_s | x_t, x̂₀)``: mean ``(B, *event)``, std and guidance weight ``c = σ_t² - σ_s²``."""
        v_t, v_s = sigma * sigma, sigma_next * sigma_next
        ratio = v_s / v_t
        mean = torch.lerp(x0, x, ratio)  # x̂₀ + (σ_s²/σ_t²)(x - x̂₀)
        return mean, (v_s * (v_t - v_s) / v_t) ** 0.5, v_t - v_s
