r"""Annealed Langevin dynamics on the prior score plus the likelihood score (Song et al. 2022; Jalal et al. 2021)."""

from __future__ import annotations

import torch
from torch import Tensor

from probgen._checks import check_int, check_positive
from probgen.infer.posterior._guidance import Guidance

__all__ = ["annealed_langevin"]


def annealed_langevin(prior, likelihood, num_samples: int, *, steps: int = 100, steps_per_level: int = 5,
                      step_size: float = 0.1, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    r"""Langevin steps over decreasing noise levels on ``p_σ(x) · p(y | x)^{λ(σ)}`` (σ-space).

    At level ``σ`` (``steps`` levels from ``σ_max`` to ``σ_min``, ``steps_per_level`` moves each; see
    :mod:`probgen.infer.posterior` for σ-space, ``x = x_0 + σ z``) with step ``ε = step_size · σ²``
    (Song & Ermon's ``ε_i ∝ σ_i²``) and likelihood temper ``λ(σ) = 1/(1 + σ²)²``:

    .. math::

        x ← x + ε \Big[\frac{D(x, σ) - x}{σ^2} + λ(σ)\, ∇ \log p(y | x)\Big] + \sqrt{2 ε}\, z,

    i.e. the unadjusted Langevin kernel of the tempered target above: the prior term moves every level
    by the same relative amount (``ε`` times its curvature ``≈ 1/σ²`` is ``step_size``), the likelihood is
    weak at high noise and full at the end (``ε λ ≤ step_size/4``). The last level targets
    ``p_{σ_min}(x) p(y | x)``: the posterior of the prior smoothed by ``σ_min``, up to the ``O(ε)`` bias
    of an unadjusted kernel and incomplete mixing across modes. The moves are stable only while
    ``ε λ ‖∇² log p(y | x)‖ < 2`` (``‖AᵀA‖/σ_y²`` for linear-Gaussian observations): lower ``step_size``
    for sharp likelihoods (small ``σ_y``); a diverging run returns non-finite draws.

    Args:
        prior, likelihood: as in ``dps``; num_samples: ``B``; steps: noise levels; steps_per_level:
        moves per level (``steps × steps_per_level`` network calls); step_size: ``ε/σ²``;
        generator: noise.

    References: Song, Shen, Xing & Ermon (2022), "Solving Inverse Problems in Medical Imaging with
    Score-Based Generative Models", arXiv:2111.08005; Jalal et al. (2021), "Robust Compressed Sensing MRI
    with Deep Generative Priors", arXiv:2108.01368; Song & Ermon (2019), arXiv:1907.05600.
    """
    steps = check_int("steps", steps, minimum=1)
    steps_per_level = check_int("steps_per_level", steps_per_level, minimum=1)
    step_size = check_positive("step_size", step_size)
    guidance = Guidance(prior, likelihood, "dps")
    x = prior.prior(num_samples, generator)
    noise = torch.empty_like(x)
    for sigma in prior.sigmas(steps)[:-1]:
        temper = 1.0 / (1.0 + sigma * sigma) ** 2
        eps = step_size * sigma * sigma
        for _ in range(steps_per_level):
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(guidance.log_prob(xg).sum(), xg)
            with torch.no_grad():
                drift = prior.score(x, sigma).add_(g, alpha=temper)
                noise.normal_(generator=generator)
                x = x.add(drift, alpha=eps).add_(noise, alpha=(2 * eps) ** 0.5)
    return {"samples": x}
