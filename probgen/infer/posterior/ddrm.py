r"""Denoising diffusion restoration models (DDRM; Kawar et al. 2022), in the SVD of the operator."""

from __future__ import annotations

import torch
from torch import Tensor

from probgen._checks import check_int, check_probability

__all__ = ["ddrm"]


def ddrm(prior, likelihood, num_samples: int, *, steps: int = 100, eta: float = 0.85, eta_b: float = 1.0,
         generator: torch.Generator | None = None) -> dict[str, Tensor]:
    r"""DDIM-like reverse steps done coordinate-wise in the spectral space of ``A = U diag(s) Vᵀ``.

    In the spectral coordinates ``x̄ = Vᵀ x_t`` of σ-space (``x_t = x_0 + σ̄_t z``; see
    :mod:`probgen.infer.posterior`), with
    ``ȳ_i = (Uᵀ y)_i / s_i`` and ``σ_i = σ_y / s_i``, each step ``t → s`` sets, from ``x̂₀`` (``x̄̂₀ = Vᵀ x̂₀``):

    .. math::

        x̄_{s,i} = \begin{cases}
          x̄̂_{0,i} + \sqrt{1-η^2}\, σ̄_s \frac{x̄_{t,i} - x̄̂_{0,i}}{σ̄_t} + η σ̄_s z & s_i = 0,\\
          x̄̂_{0,i} + \sqrt{1-η^2}\, σ̄_s \frac{ȳ_i - x̄̂_{0,i}}{σ_i} + η σ̄_s z & σ̄_s < σ_i,\\
          (1-η_b) x̄̂_{0,i} + η_b ȳ_i + \sqrt{σ̄_s^2 - σ_i^2 η_b^2}\, z & σ̄_s ≥ σ_i,
        \end{cases}

    then ``x_s = V x̄_s``; the last step (``σ̄ = 0``) returns ``x̂₀``. No gradients: one network call
    per step, the SVD built once. Not exact for non-Gaussian priors (it never
    weighs the prior's modes by the likelihood); shown in docs/conditioning.md.

    Args:
        prior, likelihood: as in ``dps``; the likelihood must be linear-Gaussian.
        num_samples: ``B``; steps: reverse steps; eta, eta_b: ``η``, ``η_b`` of the paper (0.85, 1).

    Reference: Kawar, Elad, Ermon & Song (2022), "Denoising Diffusion Restoration Models",
    arXiv:2201.11793, eq. 7–8.
    """
    steps = check_int("steps", steps, minimum=1)
    eta = check_probability("eta", eta)
    eta_b = check_probability("eta_b", eta_b)
    operator, noise_std, y = likelihood.linear
    svd = operator.svd()
    sv = svd.singulars.to(dtype=prior.dtype, device=prior.device)
    k = sv.shape[0]
    pos = sv > 1e-8 * sv.max()
    safe = torch.where(pos, sv, torch.ones_like(sv))
    y_bar = svd.Ut(y.to(dtype=prior.dtype, device=prior.device).reshape(1, -1))[:, :k] / safe
    sig_i = noise_std / safe
    sigmas = prior.sigmas(steps)
    x = prior.prior(num_samples, generator)
    z = torch.empty((num_samples, operator.in_dim), dtype=x.dtype, device=x.device)
    keep = (1 - eta**2) ** 0.5
    for sigma, sigma_next in zip(sigmas[:-2], sigmas[1:-1]):
        with torch.no_grad():
            x0 = svd.Vt(prior.denoise(x, sigma))
        xt = svd.Vt(x)
        z.normal_(generator=generator)
        new = x0 + (keep * sigma_next / sigma) * (xt - x0) + (eta * sigma_next) * z  # null space
        o0, oz = x0[:, :k], z[:, :k]
        below = o0 + keep * sigma_next * (y_bar - o0) / sig_i + eta * sigma_next * oz
        above = (1 - eta_b) * o0 + eta_b * y_bar + (sigma_next**2 - sig_i**2 * eta_b**2).clamp_min(0).sqrt() * oz
        observed = torch.where(sigma_next < sig_i, below, above)
        new[:, :k] = torch.where(pos, observed, new[:, :k])
        x = svd.V(new)
    with torch.no_grad():  # the last step (σ = 0): x̂₀ with the noiseless observed coordinates
        x0 = svd.Vt(prior.denoise(x, sigmas[-2]))
    final = (1 - eta_b) * x0[:, :k] + eta_b * y_bar
    x0[:, :k] = torch.where(pos & (sig_i <= 0), final, x0[:, :k])
    return {"samples": svd.V(x0)}
