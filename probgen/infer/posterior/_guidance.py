r"""Likelihood guidance of the reverse chain, shared by DPS, ΠGDM and SMC (private).

Two approximations of ``p(y | x_σ) = E[p(y | x_0) | x_σ]`` in σ-space (``x_σ = x_0 + σ z``), both as a
log-density ``ℓ_σ(x)`` whose gradient guides the step:

* ``"dps"`` (Chung et al. 2023): ``ℓ_σ = log p(y | x̂₀(x))`` — any likelihood read from the model;
  its gradient is one VJP through the network;
* ``"pigdm"`` (Song et al. 2023): ``ℓ_σ = log N(y; A x̂₀, σ_y² I + r² A Aᵀ)``, ``r² = σ²/(1 + σ²)``
  (the spread of ``x_0 | x_σ`` for a standard normal prior) — linear-Gaussian observations only, in the
  operator's SVD (``Uᵀ`` residual, per-coordinate variances ``σ_y² + r² s_i²``). Its gradient is
  ``(∂x̂₀/∂x)ᵀ Aᵀ (σ_y² I + r² AAᵀ)^{-1} (y - A x̂₀)``: with ``vjp=True`` by one VJP through the network,
  with ``vjp=False`` with the Jacobian of that same Gaussian model, ``∂x̂₀/∂x ≈ I/(1 + σ²)`` (exact for a
  standard normal prior; no backward pass: the cost of an unconditional step).

Everything that does not change along the chain (the SVD, ``Uᵀ y``, the observation's dtype) is
prepared once in :class:`Guidance`; a step is one network call, a few tensor ops and at most one VJP.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["Guidance", "guided_reverse"]


class Guidance:
    """``ℓ_σ(x)``, its gradient and ``x̂₀(x)`` for guidance ``kind`` in ``("dps", "pigdm")``.

    Args:
        prior: the :class:`~probgen.infer.posterior._prior.DiffusionPrior`.
        likelihood: the model's likelihood (``log_prob``, ``linear``).
        kind: ``"dps"`` or ``"pigdm"`` (needs ``likelihood.linear``).
        vjp: ``"pigdm"`` only: the exact Jacobian product (``True``) or ``I/(1 + σ²)`` (``False``).
    """

    def __init__(self, prior, likelihood, kind: str, *, vjp: bool = True):
        self.prior, self.likelihood, self.kind, self.vjp = prior, likelihood, kind, bool(vjp)
        self.linear = likelihood.linear
        if self.linear is not None:
            operator, noise_std, y = self.linear
            dtype, device = prior.dtype, prior.device
            self.operator, self.noise_var = operator, float(noise_std) ** 2
            self.y = y.to(dtype=dtype, device=device).reshape(1, -1)
            m = operator.out_dim
            self.log_norm_y = -0.5 * m * math.log(2 * math.pi * self.noise_var)
        if kind == "pigdm":
            self.svd = self.operator.svd()
            self.sv2 = self.svd.singulars.to(dtype=dtype, device=device) ** 2
            self.k = self.sv2.shape[0]
            self.uty = self.svd.Ut(self.y)  # (1, m)

    # ------------------------------------------------------------------ log-likelihoods of x̂₀
    def log_prob(self, x0: Tensor) -> Tensor:
        """``log p(y | x0)``: ``(B, *event) -> (B,)``."""
        if self.linear is None:
            return self.likelihood.log_prob(x0)
        res = self.y - self.operator._forward(x0)
        return -0.5 * (res * res).sum(-1) / self.noise_var + self.log_norm_y

    def _pigdm_terms(self, x0: Tensor, sigma: float) -> tuple[Tensor, Tensor, Tensor]:
        """``(ℓ, Uᵀ residual, variances)`` of ``N(y; A x0, σ_y² I + r² AAᵀ)`` in the SVD."""
        r2 = sigma * sigma / (1.0 + sigma * sigma)
        var = torch.full((self.operator.out_dim,), self.noise_var, dtype=x0.dtype, device=x0.device)
        var[: self.k] += r2 * self.sv2
        res = self.uty - self.svd.Ut(self.operator._forward(x0))
        ll = -0.5 * ((res * res) / var).sum(-1) - 0.5 * (var.log().sum() + var.shape[0] * math.log(2 * math.pi))
        return ll, res, var

    def guided_log_prob(self, x0: Tensor, sigma: float) -> Tensor:
        """``ℓ_σ`` evaluated at the denoised ``x0``: ``(B, *event) -> (B,)``."""
        if self.kind == "pigdm":
            return self._pigdm_terms(x0, sigma)[0]
        return self.log_prob(x0)

    # ------------------------------------------------------------------ one guided evaluation
    def __call__(self, x: Tensor, sigma: float) -> tuple[Tensor, Tensor, Tensor]:
        """``(ℓ_σ(x), ∇ₓ ℓ_σ(x), x̂₀(x))``, all detached: one network call and at most one VJP."""
        if self.kind == "pigdm" and not self.vjp:
            with torch.no_grad():
                x0 = self.prior.denoise(x, sigma)
                ll, res, var = self._pigdm_terms(x0, sigma)
                grad_x0 = self.operator._adjoint(self.svd.U(res / var))  # Aᵀ Σ⁻¹ (y - A x̂₀)
                return ll, grad_x0 / (1.0 + sigma * sigma), x0
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0 = self.prior.denoise(xg, sigma)
            ll = self.guided_log_prob(x0, sigma)
            (g,) = torch.autograd.grad(ll.sum(), xg)
        return ll.detach(), g, x0.detach()


def guided_reverse(prior, likelihood, num_samples: int, *, steps: int, scale: float, generator, kind: str,
                   vjp: bool = True) -> dict:
    """The guided ancestral reverse chain shared by DPS and ΠGDM: at each step from ``σ_t`` to ``σ_s > 0``,
    ``x_s = μ(x_t, x̂₀) + scale · c · g + σ̃ z`` with ``g`` the guidance of ``kind`` (:class:`Guidance`);
    the last step (to ``σ = 0``) returns ``x̂₀``. ``steps`` network calls. Returns ``{"samples": (B, *event)}``."""
    guidance = Guidance(prior, likelihood, kind, vjp=vjp)
    sigmas = prior.sigmas(steps)
    x = prior.prior(num_samples, generator)
    noise = torch.empty_like(x)
    for sigma, sigma_next in zip(sigmas[:-2], sigmas[1:-1]):
        _, g, x0 = guidance(x, sigma)
        mean, std, c = prior.ancestral(x, x0, sigma, sigma_next)
        noise.normal_(generator=generator)
        x = mean.add_(g, alpha=scale * c).add_(noise, alpha=std)
    with torch.no_grad():
        return {"samples": prior.denoise(x, sigmas[-2])}
