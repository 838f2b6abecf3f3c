r"""Pseudoinverse-guided diffusion (ΠGDM; Song et al. 2023) for linear-Gaussian observations."""

from __future__ import annotations

import torch
from torch import Tensor

from probgen._checks import check_int, check_nonnegative
from probgen.infer.posterior._guidance import guided_reverse

__all__ = ["pigdm"]


def pigdm(prior, likelihood, num_samples: int, *, steps: int = 200, scale: float = 1.0,
          generator: torch.Generator | None = None) -> dict[str, Tensor]:
    r"""Reverse diffusion guided by a Gaussian approximation of ``p(y | x_t)`` that keeps ``x_0``'s spread.

    With ``x_0 | x_t ≈ N(x̂₀(x_t), r_t² I)``, ``r_t² = σ_t²/(α_t² + σ_t²)``, and ``y = A x_0 + σ_y ε``,

    .. math::

        p(y | x_t) ≈ N(y;\ A x̂₀,\ σ_y² I + r_t² A Aᵀ),\qquad
        ∇_{x_t} \log p(y | x_t) ≈ \Big(\frac{∂x̂₀}{∂x_t}\Big)^{\!T} Aᵀ (σ_y² I + r_t² A Aᵀ)^{-1}(y - A x̂₀),

    the inverse taken in the SVD of ``A`` (``V S (σ_y² + r_t² S²)^{-1} Uᵀ``), the Jacobian product by one
    VJP (autograd of that Gaussian log-density); the guided ancestral step is that of
    :func:`~probgen.infer.posterior.dps.dps`. Exact when ``x_0 | x_t`` is Gaussian with covariance
    ``r_t² I`` (a standard normal prior); biased for multimodal priors.

    Args:
        prior, likelihood: as in ``dps``; the likelihood must be linear-Gaussian.
        num_samples: ``B``; steps: reverse steps; scale: multiplies the guidance; generator: noise.

    Reference: Song, Vahdat, Mardani & Kautz (2023), "Pseudoinverse-Guided Diffusion Models for Inverse
    Problems", ICLR 2023.
    """
    steps = check_int("steps", steps, minimum=1)
    scale = check_nonnegative("scale", scale)
    return guided_reverse(prior, likelihood, num_samples, steps=steps, scale=scale, generator=generator, kind="pigdm")
