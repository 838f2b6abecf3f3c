r"""Annealed Langevin dynamics on the prior score plus the likelihood score (Song et al. 2022; Jalal et al. 2021)."""

from __future__ import annotations

import torch
from torch import Tensor

from probgen._checks import check_int, check_positive
from probgen.ops.shapes import append_dims

__all__ = ["annealed_langevin"]


def annealed_langevin(prior, likelihood, num_samples: int, *, steps: int = 100, steps_per_level: int = 5,
                      step_size: float = 0.1, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    r"""Langevin steps over decreasing noise levels on ``p_t(x) · p(y | x/α_t)^{α_t²}``.

    At level ``t`` (``steps`` levels from ``T`` to ``t_min``, ``steps_per_level`` moves each) with step
    ``ε_t = step_size · α_t² σ_t²`` (at most ``step_size/4`` for a VP schedule):

    .. math::

        x ← x + ε_t \big[s(x, t) + α_t ∇ \log p(y | x/α_t)\big] + \sqrt{2 ε_t}\, z,

    i.e. the unadjusted Langevin kernel of the tempered target above, whose likelihood is read at the
    rescaled ``x/α_t`` and tempered by ``α_t²`` (weak at high noise, full at the end). The last level
    targets ``p_{t_min}(x) p(y | x)``: the posterior of the prior smoothed by ``σ(t_min)``, up to the
    ``O(ε)`` bias of an unadjusted kernel and incomplete mixing across modes. Returns ``x/α_{t_min}``.
    The likelihood term's Hessian is ``∇² log p(y | x)`` at every level (``AᵀA/σ_y²`` for linear-Gaussian
    observations), so the moves are stable only while ``ε_t ‖∇² log p(y | x)‖ < 2``: lower ``step_size``
    for sharp likelihoods (small ``σ_y``); a diverging run returns non-finite draws.

    Args:
        prior, likelihood: as in ``dps``; num_samples: ``B``; steps: noise levels; steps_per_level:
        moves per level; step_size: ``ε_t / (α_t² σ_t²)``; generator: noise.

    References: Song, Shen, Xing & Ermon (2022), "Solving Inverse Problems in Medical Imaging with
    Score-Based Generative Models", arXiv:2111.08005; Jalal et al. (2021), "Robust Compressed Sensing MRI
    with Deep Generative Priors", arXiv:2108.01368; Song & Ermon (2019), arXiv:1907.05600.
    """
    steps = check_int("steps", steps, minimum=1)
    steps_per_level = check_int("steps_per_level", steps_per_level, minimum=1)
    step_size = check_positive("step_size", step_size)
    x = prior.prior(num_samples, generator)
    for t in prior.times(steps)[1:]:
        a, v = float(prior.alpha(t)), float(prior.sigma(t)) ** 2
        eps = step_size * a * a * v
        for _ in range(steps_per_level):
            _, g = likelihood.log_prob_and_grad(x, lambda z, a=a: z / a)
            with torch.no_grad():
                drift = prior.score(x, t) + a * a * g
                x = x + eps * drift + (2 * eps) ** 0.5 * torch.randn(x.shape, generator=generator, dtype=x.dtype,
                                                                  device=x.device)
    return {"samples": x / append_dims(prior.alpha(t, x.shape[0]), x.dim())}
