r"""Samplers with one signature, on the σ-space denoiser that every diffusion-type family exposes.

In the style of k-diffusion's ``sampling.py``, each sampler is a short function

.. code-block:: python

    sample_<name>(model, x, sigmas, *, callback=None, generator=None, **options) -> Tensor

where ``model`` is a :class:`~probgen.samplers.denoiser.Denoiser` ``D(x, σ)`` (``model.denoiser()`` of
a DDPM, ScoreSDE, EDM or flow-matching model), ``x = σ_0 z`` the starting noise, ``sigmas`` a
decreasing ``(N + 1,)`` grid ending at 0 (:func:`karras_sigmas`), and ``callback(i, x, sigma, denoised)``
sees each step. Each works on every family, because every family is the ODE/SDE
``dx/dσ = (x - D)/σ`` in σ-space:

============================  ==========================================================================
``sample_euler``              Euler on the probability-flow ODE (= DDIM with η = 0); EDM churn optional
``sample_heun``               EDM's 2nd-order Heun (Algorithm 1; with ``s_churn`` Algorithm 2)
``sample_euler_ancestral``    ancestral steps: η = 1 is exactly DDPM's ancestral sampler (posterior
                              ``q(x_s | x_t, x̂_0)``), η = 0 DDIM, ``sigmas_up`` any reverse variance
``sample_euler_inverse``      DDIM inversion (the Euler step run upwards, fixed-point refined)
``sample_dpm_solver_sigma``   DPM-Solver / DPM-Solver++, orders 1–3, single- or multistep
                              (:mod:`probgen.samplers.dpm_solver`)
``sample_dpmpp_2m``           DPM-Solver++(2M) (the multistep order-2 case of the above)
``sample_probability_flow``   the probability-flow ODE in ``log σ`` through the ODE core, adaptive or
                              fixed-step (:mod:`probgen.samplers.ode`)
``sample_reverse_sde``        the reverse SDE ``dx = 2(x - D)/σ dσ + √(2σ) dw̄`` through ``torchsde``
                              (:mod:`probgen.samplers.sde`)
``sample_predictor_corrector``  reverse-diffusion or Euler–Maruyama predictor + Langevin corrector
                              (Song et al. 2021; :mod:`probgen.samplers.pc`)
``sample_annealed_langevin``  annealed Langevin dynamics over the σ's (Song & Ermon 2019;
                              :mod:`probgen.samplers.annealed`)
============================  ==========================================================================

Validation happens once at entry (``sigmas`` shape and order, ``x``); NFE is ``model.nfe``. The older
samplers over ``(score_fn, sde)`` or ``(eps_fn, schedule)`` (:func:`~probgen.samplers.sample_sde`,
:func:`~probgen.samplers.sample_ddim`, ...) are front ends that run these.

References: Karras et al. (2022), arXiv:2206.00364, Algorithms 1–2 and eq. 5 (ρ-schedule); Lu et al.
(2022), DPM-Solver++, arXiv:2211.01095; Song, Meng & Ermon (2021), DDIM, arXiv:2010.02502; Song et al.
(2021), arXiv:2011.13456; Song & Ermon (2019), arXiv:1907.05600; k-diffusion ``sampling.py``
(Crowson).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from probgen._checks import check_choice, check_int, check_nonnegative, check_positive, check_tensor
from probgen.samplers.annealed import sample_annealed_langevin
from probgen.samplers.base import SigmaCallback, _randn_like, check_sigma_sampler, full_sigma
from probgen.samplers.denoiser import Denoiser
from probgen.samplers.dpm_solver import sample_dpm_solver_sigma
from probgen.samplers.ode import sample_probability_flow
from probgen.samplers.pc import sample_predictor_corrector
from probgen.samplers.sde import sample_reverse_sde

__all__ = [
    "karras_sigmas",
    "sample_euler",
    "sample_heun",
    "sample_euler_ancestral",
    "sample_euler_inverse",
    "sample_dpm_solver_sigma",
    "sample_dpmpp_2m",
    "sample_probability_flow",
    "sample_reverse_sde",
    "sample_predictor_corrector",
    "sample_annealed_langevin",
    "KARRAS_SAMPLERS",
    "sample_denoiser",
]

def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, *, rho: float = 7.0,
                  device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Tensor:
    r"""EDM's noise levels ``σ_i = (σ_max^{1/ρ} + i/(N-1) (σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ``, then ``σ_N = 0``.

    Reference: Karras et al. (2022), arXiv:2206.00364, eq. 5.

    Example:
        >>> [round(v, 4) for v in karras_sigmas(3, 0.002, 80.0).tolist()]
        [80.0, 2.5152, 0.002, 0.0]
    """
    num_steps = check_int("num_steps", num_steps, minimum=1)
    sigma_min, sigma_max, rho = check_positive("sigma_min", sigma_min), check_positive("sigma_max", sigma_max), \
        check_positive("rho", rho)
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64) if num_steps > 1 else torch.zeros(1, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    out = torch.cat([sigmas, sigmas.new_zeros(1)])
    return out.to(device=device, dtype=dtype if dtype is not None else torch.get_default_dtype())


def _churn(x: Tensor, sigma: Tensor, num_steps: int, s_churn: float, s_tmin: float, s_tmax: float,
           s_noise: float, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """EDM's stochastic churn: raise σ to ``σ̂ = σ(1 + γ)`` by adding noise (Algorithm 2, lines 4–6)."""
    gamma = min(s_churn / num_steps, math.sqrt(2.0) - 1.0) if s_tmin <= float(sigma) <= s_tmax else 0.0
    if gamma == 0.0:
        return x, sigma
    sigma_hat = sigma * (1.0 + gamma)
    return x + _randn_like(x, generator) * s_noise * (sigma_hat**2 - sigma**2).sqrt(), sigma_hat


@torch.no_grad()
def sample_euler(model: Denoiser, x: Tensor, sigmas: Tensor, *, callback: SigmaCallback | None = None,
                 generator: torch.Generator | None = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                 s_tmax: float = math.inf, s_noise: float = 1.0) -> Tensor:
    """Euler steps ``x ← x + (σ_{i+1} - σ̂_i) (x - D(x, σ̂_i))/σ̂_i`` (DDIM with η = 0 when ``s_churn = 0``).

    Example:
        >>> d = Denoiser(lambda x, s: torch.zeros_like(x), sigma_min=0.01, sigma_max=10.0)
        >>> sample_euler(d, torch.ones(2, 2), karras_sigmas(5, 0.01, 10.0)).abs().max().item()
        0.0
    """
    x, sigmas = check_sigma_sampler(model, x, sigmas, callback)
    n = sigmas.shape[0] - 1
    for i in range(n):
        x, sigma_hat = _churn(x, sigmas[i], n, s_churn, s_tmin, s_tmax, s_noise, generator)
        denoised = model(x, full_sigma(x, sigma_hat))
        x = x + (x - denoised) / sigma_hat * (sigmas[i + 1] - sigma_hat)
        if callback is not None:
            callback(i, x, float(sigmas[i + 1]), denoised)
    return x


@torch.no_grad()
def sample_heun(model: Denoiser, x: Tensor, sigmas: Tensor, *, callback: SigmaCallback | None = None,
                generator: torch.Generator | None = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                s_tmax: float = math.inf, s_noise: float = 1.0) -> Tensor:
    r"""EDM's Heun sampler (Karras et al. 2022, Algorithm 1; with ``s_churn > 0`` the stochastic Algorithm 2).

    .. math::

        d_i = \frac{x_i - D(x_i, σ_i)}{σ_i}, \quad \tilde x = x_i + (σ_{i+1} - σ_i) d_i, \quad
        x_{i+1} = x_i + (σ_{i+1} - σ_i)\tfrac12\Big(d_i + \frac{\tilde x - D(\tilde x, σ_{i+1})}{σ_{i+1}}\Big)

    (the last step, to ``σ = 0``, is an Euler step). ``2N - 1`` evaluations for ``N`` steps.

    Example:
        >>> d = Denoiser(lambda x, s: x / (1 + s[:, None] ** 2), sigma_min=0.002, sigma_max=80.0)
        >>> x = sample_heun(d, 80.0 * torch.randn(4000, 1, generator=torch.Generator().manual_seed(0)),
        ...                 karras_sigmas(18, 0.002, 80.0))
        >>> round(float(x.std()), 1)   # N(0, 1) data
        1.0
    """
    x, sigmas = check_sigma_sampler(model, x, sigmas, callback)
    n = sigmas.shape[0] - 1
    for i in range(n):
        x, sigma_hat = _churn(x, sigmas[i], n, s_churn, s_tmin, s_tmax, s_noise, generator)
        denoised = model(x, full_sigma(x, sigma_hat))
        d = (x - denoised) / sigma_hat
        dt = sigmas[i + 1] - sigma_hat
        if float(sigmas[i + 1]) == 0.0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - model(x_2, full_sigma(x, sigmas[i + 1]))) / sigmas[i + 1]
            x = x + 0.5 * (d + d_2) * dt
        if callback is not None:
            callback(i, x, float(sigmas[i + 1]), denoised)
    return x


def _ancestral_step(sigma_from: Tensor, sigma_to: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    """``(σ_down, σ_up)`` with ``σ_down² + σ_up² = σ_to²`` (k-diffusion's ``get_ancestral_step``)."""
    if eta == 0.0 or float(sigma_to) == 0.0:
        return sigma_to, torch.zeros_like(sigma_to)
    sigma_up = torch.minimum(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2).sqrt())
    return (sigma_to**2 - sigma_up**2).sqrt(), sigma_up


@torch.no_grad()
def sample_euler_ancestral(model: Denoiser, x: Tensor, sigmas: Tensor, *, callback: SigmaCallback | None = None,
                           generator: torch.Generator | None = None, eta: float = 1.0, s_noise: float = 1.0,
                           sigmas_up: Tensor | None = None) -> Tensor:
    r"""Ancestral sampling: an Euler step to ``σ_down`` then fresh noise of scale ``σ_up``.

    .. math::

        x_{i+1} = D_i + \frac{σ_{down}}{σ_i}(x_i - D_i) + σ_{up} z, \qquad
        σ_{up} = \min\Big(σ_{i+1},\ η\, σ_{i+1}\sqrt{1 - σ_{i+1}^2/σ_i^2}\Big),\quad
        σ_{down} = \sqrt{σ_{i+1}^2 - σ_{up}^2}.

    ``η = 0`` is DDIM (Song, Meng & Ermon 2021, eq. 12 with ``σ_k = η(...)``: the same family of steps).
    ``η = 1`` is *exactly* DDPM's ancestral step with ``σ_t² = β̃_t`` on a VP path, not an approximation: in
    σ-space the forward chain is a Brownian motion in ``σ²``, its posterior ``q(x_{i+1} | x_i, x_0)`` is the
    Brownian bridge ``N(x_0 + (σ_{i+1}^2/σ_i^2)(x_i - x_0),\ σ_{i+1}^2(1 - σ_{i+1}^2/σ_i^2))``, and
    ``σ_{down}/σ_i = σ_{i+1}^2/σ_i^2``, ``σ_{up}^2`` its variance (``β̃_t = ᾱ_{t-1} σ_{up}^2``).
    ``sigmas_up`` (``(N,)``, one per step) keeps that posterior mean and sets the noise scale of each step
    instead, for a DDPM's other reverse variances (``σ_{up} = σ_t/\sqrt{ᾱ_{t-1}}`` for ``σ_t^2 = β_t`` or
    Analytic-DPM's); ``eta`` must then stay 1.

    Example:
        >>> d = Denoiser(lambda x, s: torch.zeros_like(x), sigma_min=0.01, sigma_max=10.0)   # a point mass at 0
        >>> sample_euler_ancestral(d, torch.ones(3, 2), karras_sigmas(5, 0.01, 10.0)).abs().max().item()
        0.0
    """
    x, sigmas = check_sigma_sampler(model, x, sigmas, callback)
    eta = check_nonnegative("eta", eta)
    if sigmas_up is not None:
        check_tensor("sigmas_up", sigmas_up, ndim=1)
        if sigmas_up.shape[0] != sigmas.shape[0] - 1 or bool((sigmas_up < 0).any()):
            raise ValueError(f"sigmas_up must hold {sigmas.shape[0] - 1} values >= 0 (one per step), "
                             f"got shape {tuple(sigmas_up.shape)}")
        if eta != 1.0:
            raise ValueError(f"sigmas_up sets the noise of every step: leave eta = 1, got eta={eta}")
        sigmas_up = sigmas_up.to(dtype=x.dtype, device=x.device)
    for i in range(sigmas.shape[0] - 1):
        denoised = model(x, full_sigma(x, sigmas[i]))
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigmas_up is not None:
            sigma_down, sigma_up = sigmas[i + 1] ** 2 / sigmas[i], sigmas_up[i]
        x = denoised + (x - denoised) * (sigma_down / sigmas[i])
        if float(sigma_up) > 0:
            x = x + _randn_like(x, generator) * s_noise * sigma_up
        if callback is not None:
            callback(i, x, float(sigmas[i + 1]), denoised)
    return x


@torch.no_grad()
def sample_euler_inverse(model: Denoiser, x: Tensor, sigmas: Tensor, *, callback: SigmaCallback | None = None,
                         generator: torch.Generator | None = None, fixed_point_iters: int = 5) -> Tensor:
    r"""DDIM inversion: run the deterministic Euler/DDIM map *upwards* on an increasing grid ``σ_0 < … < σ_N``.

    Each step inverts the Euler step ``x_i = x_{i+1} + (σ_i - σ_{i+1}) ε̂(x_{i+1}, σ_{i+1})`` (``ε̂ = (x - D)/σ``),
    i.e. solves the implicit equation

    .. math::

        x_{i+1} = x_i + (σ_{i+1} - σ_i)\, ε̂(x_{i+1}, σ_{i+1})

    by fixed-point iteration from the explicit Euler step up (``ε̂(x_i, σ_i)``; from ``σ_0 = 0``, ``ε̂(x_0, σ_1)``,
    the classic DDIM inversion); ``fixed_point_iters`` refinements make :func:`sample_euler` on the reversed
    grid retrace it to solver precision.
    ``N (1 + fixed_point_iters)`` evaluations. ``σ_0`` may be 0 (data).

    Reference: Song, Meng & Ermon (2021), arXiv:2010.02502, Sec. 4.3.

    Example:
        >>> d = Denoiser(lambda x, s: x / (1 + s[:, None] ** 2), sigma_min=0.01, sigma_max=10.0)
        >>> x0, up = torch.randn(3, 2, dtype=torch.float64), torch.tensor([0.0, 0.5, 1.0, 2.0], dtype=torch.float64)
        >>> z = sample_euler_inverse(d, x0, up, fixed_point_iters=30)
        >>> torch.allclose(sample_euler(d, z, up.flip(0)), x0)
        True
    """
    x, sigmas = check_sigma_sampler(model, x, sigmas, callback, increasing=True)
    fixed_point_iters = check_int("fixed_point_iters", fixed_point_iters, minimum=0)
    for i in range(sigmas.shape[0] - 1):
        sigma, step = sigmas[i + 1], sigmas[i + 1] - sigmas[i]
        # the explicit start: an Euler step up (the slope at σ_i); from σ_i = 0 the slope at σ_{i+1}
        start = sigmas[i] if float(sigmas[i]) > 0 else sigma
        x_next = x + step * model.eps(x, full_sigma(x, start))
        for _ in range(fixed_point_iters):
            x_next = x + step * model.eps(x_next, full_sigma(x, sigma))
        x = x_next
        if callback is not None:
            callback(i, x, float(sigma), None)
    return x


def sample_dpmpp_2m(model: Denoiser, x: Tensor, sigmas: Tensor, *, callback: SigmaCallback | None = None,
                    generator: torch.Generator | None = None) -> Tensor:
    r"""DPM-Solver++(2M): second-order multistep in ``λ = -log σ`` on the data prediction.

    .. math::

        x_{i+1} = \frac{σ_{i+1}}{σ_i} x_i - (e^{-h_i} - 1) D_i', \quad
        D_i' = (1 + \tfrac{1}{2r_i}) D_i - \tfrac{1}{2r_i} D_{i-1},\ r_i = h_{i-1}/h_i

    (first step and the last, to σ = 0, first order). ``N`` evaluations for ``N`` steps. This is
    :func:`~probgen.samplers.dpm_solver.sample_dpm_solver_sigma` with ``order=2``, multistep, ``"dpmsolver++"``.
    Reference: Lu et al. (2022), arXiv:2211.01095, Algorithm 2; k-diffusion ``sample_dpmpp_2m``.
    """
    return sample_dpm_solver_sigma(model, x, sigmas, callback=callback, generator=generator, order=2,
                                   method="multistep", algorithm="dpmsolver++", lower_order_final=False)


KARRAS_SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "euler": sample_euler,
    "heun": sample_heun,
    "euler-ancestral": sample_euler_ancestral,
    "dpm++2m": sample_dpmpp_2m,
    "dpm-solver-sigma": sample_dpm_solver_sigma,
    "ode-sigma": sample_probability_flow,
    "reverse-sde": sample_reverse_sde,
    "pc-sigma": sample_predictor_corrector,
    "annealed-langevin-sigma": sample_annealed_langevin,
}
"""The samplers of this module by name (the ``method=`` of the models' ``sample``)."""


def sample_denoiser(model: Denoiser, shape: tuple[int, ...], *, method: str = "heun", steps: int = 18,
                    rho: float = 7.0, generator: torch.Generator | None = None,
                    device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                    callback: SigmaCallback | None = None, **options: Any) -> Tensor:
    """Draw ``shape = (B, *event)`` samples: ``x = σ_max z`` on :func:`karras_sigmas` (``steps``, ``rho``)
    between the model's ``sigma_min`` and ``sigma_max``, then the sampler ``method`` of :data:`KARRAS_SAMPLERS`.

    This is what the models' ``sample(n, method=...)`` runs for these methods.
    """
    method = check_choice("method", method, tuple(KARRAS_SAMPLERS))
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    sigmas = karras_sigmas(steps, model.sigma_min, model.sigma_max, rho=rho, device=device, dtype=dtype)
    x = torch.randn(shape, generator=generator, device=device, dtype=dtype) * model.sigma_max
    return KARRAS_SAMPLERS[method](model, x, sigmas, callback=callback, generator=generator, **options)
