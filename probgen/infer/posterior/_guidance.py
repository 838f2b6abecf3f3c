r"""Likelihood guidance of the reverse chain, shared by DPS, ΠGDM and SMC (private).

Two approximations of ``p(y | x_t) = E[p(y | x_0) | x_t]``, both as a log-density ``ℓ_t(x_t)`` whose
gradient (one VJP through the network) guides the step:

* ``"dps"`` (Chung et al. 2023): ``ℓ_t = log p(y | x̂₀(x_t))`` — any likelihood read from the model;
* ``"pigdm"`` (Song et al. 2023): ``ℓ_t = log N(y; A x̂₀, σ_y² I + r_t² A Aᵀ)``, ``r_t² = σ_t²/(α_t² + σ_t²)``
  — linear-Gaussian observations only; evaluated in the operator's SVD (``Uᵀ`` residual, per-coordinate
  variances ``σ_y² + r_t² s_i²``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["guided", "pigdm_log_likelihood"]


def pigdm_log_likelihood(prior, linear, x0: Tensor, t: Tensor) -> Tensor:
    """``log N(y; A x0, σ_y² I + r_t² A Aᵀ)`` for ``x0: (B, *event)`` -> ``(B,)``."""
    operator, noise_std, y = linear
    svd = operator.svd()
    a2, v2 = float(prior.alpha(t)) ** 2, float(prior.sigma(t)) ** 2
    r2 = v2 / (a2 + v2)
    sv = svd.singulars.to(dtype=x0.dtype, device=x0.device)
    var = torch.full((operator.out_dim,), noise_std**2, dtype=x0.dtype, device=x0.device)
    var[: sv.shape[0]] += r2 * sv**2
    res = svd.Ut(y.to(x0).reshape(1, -1) - operator(x0))
    return -0.5 * ((res**2) / var).sum(-1) - 0.5 * (var.log().sum() + operator.out_dim * math.log(2 * math.pi))


def guided(prior, likelihood, x: Tensor, t: Tensor, kind: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(ℓ_t(x), ∇ₓ ℓ_t(x), x̂₀(x))`` (all detached) for guidance ``kind`` in ``("dps", "pigdm")``."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        x0 = prior.denoise(xg, t)
        if kind == "pigdm":
            ll = pigdm_log_likelihood(prior, likelihood.linear, x0, t)
        else:
            ll = likelihood.log_prob(x0)
        (g,) = torch.autograd.grad(ll.sum(), xg)
    return ll.detach(), g, x0.detach()


def guided_reverse(prior, likelihood, num_samples: int, *, steps: int, scale: float, generator, kind: str) -> dict:
    """The guided ancestral reverse chain shared by DPS and ΠGDM: at each step from ``t`` to ``s``,
    ``x_s = mean(x_t, x̂₀) + scale · c · g + std · z`` with ``g`` the likelihood guidance of ``kind``
    (:func:`guided`), then the last denoised state. Returns ``{"samples": (num_samples, *event)}``."""
    ts = prior.times(steps)
    x = prior.prior(num_samples, generator)
    for i in range(steps):
        t, s = ts[i], ts[i + 1]
        _, g, x0 = guided(prior, likelihood, x, t, kind)
        mean, std, c = prior.ancestral(x, x0, t, s)
        x = mean + scale * c * g + std * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        return {"samples": prior.denoise(x, ts[-1])}
