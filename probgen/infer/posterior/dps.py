r"""Diffusion posterior sampling (DPS; Chung et al. 2023)."""

from __future__ import annotations

import torch
from torch import Tensor

from probgen._checks import check_int, check_nonnegative
from probgen.infer.posterior._guidance import guided_reverse

__all__ = ["dps"]


def dps(prior, likelihood, num_samples: int, *, steps: int = 200, scale: float = 1.0,
        generator: torch.Generator | None = None) -> dict[str, Tensor]:
    r"""Reverse diffusion guided by the likelihood of the denoised estimate.

    DPS approximates the intractable ``p(y | x_t) = E[p(y | x_0) | x_t]`` by ``p(y | x̂₀(x_t))`` with
    Tweedie's ``x̂₀ = D(x_t, σ_t)`` (σ-space, ``x_t = x_0 + σ_t z``; see :mod:`probgen.infer.posterior`),
    so the posterior score is

    .. math::

        ∇ \log p_t(x_t | y) ≈ \frac{x̂₀ - x_t}{σ_t^2} + ζ\, ∇_{x_t} \log p(y | x̂₀(x_t)),

    and each ancestral step ``σ_t → σ_s`` uses it: ``x_s = μ(x_t, x̂₀) + ζ (σ_t² - σ_s²) g + σ̃ z``
    (``g`` is one vector–Jacobian product through the network); the last step returns ``x̂₀``. ``ζ = 1`` (``scale``) is the plain
    plug-in; Chung et al. use ``ζ_t = ζ'/‖y - A x̂₀‖`` instead, larger at the start. The plug-in is
    biased: it ignores the spread of ``x_0 | x_t`` and over-concentrates (see docs/conditioning.md).

    Args:
        prior: the diffusion adapter; likelihood: the model's ``log p(y | x)``.
        num_samples: ``B``; steps: network calls (noise levels); scale: ``ζ``; generator: for the noise.

    Returns:
        ``{"samples": (B, *event)}``.

    Reference: Chung, Kim, Mccann, Klasky & Ye (2023), "Diffusion Posterior Sampling for General Noisy
    Inverse Problems", arXiv:2209.14687.
    """
    steps = check_int("steps", steps, minimum=1)
    scale = check_nonnegative("scale", scale)
    return guided_reverse(prior, likelihood, num_samples, steps=steps, scale=scale, generator=generator, kind="dps")
