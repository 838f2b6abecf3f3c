r"""Pseudoinverse-guided diffusion (ΠGDM; Song et al. 2023) for linear-Gaussian observations."""

from __future__ import annotations

import torch
from torch import Tensor

from probgen._checks import check_bool, check_int, check_nonnegative
from probgen.infer.posterior._guidance import guided_reverse

__all__ = ["pigdm"]


def pigdm(prior, likelihood, num_samples: int, *, steps: int = 200, scale: float = 1.0, vjp: bool = True,
          generator: torch.Generator | None = None) -> dict[str, Tensor]:
    r"""Reverse diffusion guided by a Gaussian approximation of ``p(y | x_t)`` that keeps ``x_0``'s spread.

    In σ-space (``x_σ = x_0 + σ z``, see :mod:`probgen.infer.posterior`), with
    ``x_0 | x_σ ≈ N(x̂₀(x_σ), r² I)``, ``r² = σ²/(1 + σ²)``, and ``y = A x_0 + σ_y ε``,

    .. math::

        p(y | x_σ) ≈ N(y;\ A x̂₀,\ σ_y² I + r² A Aᵀ),\qquad
        ∇_{x_σ} \log p(y | x_σ) ≈ \Big(\frac{∂x̂₀}{∂x_σ}\Big)^{\!T} Aᵀ (σ_y² I + r² A Aᵀ)^{-1}(y - A x̂₀),

    the inverse taken in the SVD of ``A`` (``V S (σ_y² + r² S²)^{-1} Uᵀ``). The Jacobian product is one
    VJP through the network (``vjp=True``, the paper's method) or, with ``vjp=False``, the Jacobian of
    the same Gaussian model, ``∂x̂₀/∂x_σ = I/(1 + σ²)`` (no backward pass: the cost of an unconditional
    step). The guided ancestral step is that of :func:`~probgen.infer.posterior.dps.dps`. Both variants
    are exact when the prior is standard normal (then ``x_0 | x_σ`` is ``N(x̂₀, r² I)``); biased for
    multimodal priors.

    Args:
        prior, likelihood: as in ``dps``; the likelihood must be linear-Gaussian.
        num_samples: ``B``; steps: network calls (noise levels); scale: multiplies the guidance;
        vjp: the exact Jacobian product (``True``) or ``I/(1 + σ²)``; generator: noise.

    Reference: Song, Vahdat, Mardani & Kautz (2023), "Pseudoinverse-Guided Diffusion Models for Inverse
    Problems", ICLR 2023.
    """
    steps = check_int("steps", steps, minimum=1)
    scale = check_nonnegative("scale", scale)
    vjp = check_bool("vjp", vjp)
    return guided_reverse(prior, likelihood, num_samples, steps=steps, scale=scale, generator=generator, kind="pigdm",
                          vjp=vjp)
