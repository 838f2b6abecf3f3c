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
``sample_euler_ancestral``    ancestral steps, η = 1 a DDPM-type ancestral sampler, η = 0 DDIM
``sample_dpmpp_2m``           DPM-Solver++(2M), multistep 2nd order in log σ
``sample_reverse_sde``        Euler–Maruyama on the reverse SDE ``dx = 2(x - D)/σ dσ + √(2σ) dw̄``,
                              Brownian increments from ``torchsde.BrownianInterval``
``sample_predictor_corrector``  reverse-diffusion predictor + Langevin corrector (Song et al. 2021)
``sample_annealed_langevin``  annealed Langevin dynamics over the σ's (Song & Ermon 2019)
============================  ==========================================================================

Validation happens once at entry (``sigmas`` shape and order, ``x``); NFE is ``model.nfe``.

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

from probgen._checks import check_int, check_nonnegative, check_positive, check_tensor
from probgen.ops.shapes import flatten_event
from probgen.samplers.denoiser import Denoiser

__all__ = [
    "karras_sigmas",
    "sample_euler",
    "sample_heun",
    "sample_euler_ancestral",
    "sample_dpmpp_2m",
    "sample_reverse_sde",
    "sample_predictor_corrector",
    "sample_annealed_langevin",
    "KARRAS_SAMPLERS",
    "sample_denoiser",
]

SigmaCallback = Callable[[int, Tensor, float, Tensor], None]
"""``callback(i, x, sigma, denoised)`` after step ``i``."""


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


def _check(model: Any, x: Any, sigmas: Any, callback: Any) -> tuple[Tensor, Tensor]:
    if not callable(model):
        raise TypeError(f"model must be a Denoiser (callable as model(x, sigma)), got {type(model).__name__}")
    check_tensor("x", x, min_ndim=2)
    check_tensor("sigmas", sigmas, ndim=1)
    if sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must hold at least 2 noise levels (start and end), got {sigmas.shape[0]}")
    if bool((sigmas[1:] > sigmas[:-1]).any()) or bool((sigmas < 0).any()):
        raise ValueError("sigmas must be non-negative and decreasing (e.g. karras_sigmas(...))")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable as callback(i, x, sigma, denoised) or None, "
                        f"got {type(callback).__name__}")
    return x.detach(), sigmas.to(dtype=x.dtype, device=x.device)


def _full(x: Tensor, sigma: Tensor) -> Tensor:
    return sigma.expand(x.shape[0])


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def _churn(x: Tensor, sigma: Tensor, num_steps: int, s_churn: float, s_tmin: float, s_tmax: float,
           s_noise: float, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """EDM's stochastic churn: raise σ to ``σ̂ = σ(1 + γ)`` by adding noise (Algorithm 2, lines 4–6)."""
    gamma = min(s_churn / num_steps, math.sqrt(2.0) - 1.0) if s_tmin <= float(sigma) <= s_tmax else 0.0
    if gamma == 0.0:
        return x, sigma
    sigma_hat = sigma * (1.0 + gamma)
    return x + _noise(x, generator) * s_noise * (sigma_hat**2 - sigma**2).sqrt(), sigma_hat


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
    x, sigmas = _check(model, x, sigmas, callback)
    n = sigmas.shape[0] - 1
    for i in range(n):
        x, sigma_hat = _churn(x, sigmas[i], n, s_churn, s_tmin, s_tmax, s_noise, generator)
        denoised = model(x, _full(x, sigma_hat))
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
    x, sigmas = _check(model, x, sigmas, callback)
    n = sigmas.shape[0] - 1
    for i in range(n):
        x, sigma_hat = _churn(x, sigmas[i], n, s_churn, s_tmin, s_tmax, s_noise, generator)
        denoised = model(x, _full(x, sigma_hat))
        d = (x - denoised) / sigma_hat
        dt = sigmas[i + 1] - sigma_hat
        if float(sigmas[i + 1]) == 0.0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - model(x_2, _full(x, sigmas[i + 1]))) / sigmas[i + 1]
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
                           generator: torch.Generator | None = None, eta: float = 1.0,
                           s_noise: float = 1.0) -> Tensor:
    r"""Ancestral sampling: an Euler step to ``σ_down`` then fresh noise of scale ``σ_up``.

    ``σ_up = η σ_{i+1} \sqrt{(σ_i² - σ_{i+1}²)/σ_i²}``; ``η = 1`` is DDPM's ancestral sampler (the exact
    posterior ``q(x_{i+1} | x_i, x̂_0)`` in σ-space), ``η = 0`` is DDIM (Song, Meng & Ermon 2021, eq. 16).
    """
    x, sigmas = _check(model, x, sigmas, callback)
    eta = check_nonnegative("eta", eta)
    for i in range(sigmas.shape[0] - 1):
        denoised = model(x, _full(x, sigmas[i]))
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1], eta)
        x = x + (x - denoised) / sigmas[i] * (sigma_down - sigmas[i])
        if float(sigma_up) > 0:
            x = x + _noise(x, generator) * s_noise * sigma_up
        if callback is not None:
            callback(i, x, float(sigmas[i + 1]), denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2m(model: Denoiser, x: Tensor, sigmas: Tensor, *, callback: SigmaCallback | None = None,
                    generator: torch.Generator | None = None) -> Tensor:
    r"""DPM-Solver++(2M): second-order multistep in ``λ = -log σ`` on the data prediction.

    .. math::

        x_{i+1} = \frac{σ_{i+1}}{σ_i} x_i - (e^{-h_i} - 1) D_i', \quad
        D_i' = (1 + \tfrac{1}{2r_i}) D_i - \tfrac{1}{2r_i} D_{i-1},\ r_i = h_{i-1}/h_i

    (first step and the last, to σ = 0, first order). ``N`` evaluations for ``N`` steps.
    Reference: Lu et al. (2022), arXiv:2211.01095, Algorithm 2; k-diffusion ``sample_dpmpp_2m``.
    """
    x, sigmas = _check(model, x, sigmas, callback)
    old_denoised, h_last = None, None
    for i in range(sigmas.shape[0] - 1):
        denoised = model(x, _full(x, sigmas[i]))
        if float(sigmas[i + 1]) == 0.0:
            x = denoised
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            d = denoised
            if old_denoised is not None:
                r = h_last / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigmas[i + 1] / sigmas[i]) * x - torch.expm1(-h) * d
            h_last = h
        old_denoised = denoised
        if callback is not None:
            callback(i, x, float(sigmas[i + 1]), denoised)
    return x


@torch.no_grad()
def sample_reverse_sde(model: Denoiser, x: Tensor, sigmas: Tensor, *, callback: SigmaCallback | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
    r"""Euler–Maruyama on the reverse-time SDE of σ-space, ``dx = 2\frac{x - D}{σ} dσ + \sqrt{2σ}\,d\bar w``.

    The forward SDE ``dx = \sqrt{2σ}\,dw_σ`` adds variance ``dσ²``; its time reversal (Anderson 1982)
    has drift ``-g² ∇\log p = 2(x - D)/σ``. Brownian increments come from one
    ``torchsde.BrownianInterval`` (seeded from ``generator``), so a finer grid refines the same path.
    The last step, to ``σ = 0``, returns the denoised ``D(x, σ_{N-1})``.
    """
    import torchsde

    x, sigmas = _check(model, x, sigmas, callback)
    s0 = float(sigmas[0])
    entropy_device = generator.device if generator is not None else "cpu"
    entropy = int(torch.randint(0, 2**62, (1,), generator=generator, device=entropy_device).item())
    bm = torchsde.BrownianInterval(t0=0.0, t1=s0, size=tuple(x.shape), dtype=x.dtype, device=x.device,
                                   entropy=entropy)
    for i in range(sigmas.shape[0] - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, _full(x, sigma))
        if float(sigma_next) == 0.0:
            x = denoised
        else:
            dw = bm(s0 - float(sigma), s0 - float(sigma_next))
            x = x + 2.0 * (x - denoised) / sigma * (sigma_next - sigma) + (2.0 * sigma).sqrt() * dw
        if callback is not None:
            callback(i, x, float(sigma_next), denoised)
    return x


@torch.no_grad()
def sample_predictor_corrector(model: Denoiser, x: Tensor, sigmas: Tensor, *,
                               callback: SigmaCallback | None = None, generator: torch.Generator | None = None,
                               snr: float = 0.16, corrector_steps: int = 1) -> Tensor:
    r"""Predictor–corrector (Song et al. 2021, Alg. 2 in σ-space): a reverse-diffusion predictor
    ``x ← x + (σ_i² - σ_{i+1}²) s(x, σ_i) + \sqrt{σ_i² - σ_{i+1}²} z`` and ``corrector_steps`` Langevin
    moves at ``σ_{i+1}``, ``x ← x + e s + \sqrt{2e} z`` with ``e = 2 (snr ‖z‖ / ‖s‖)²`` (batch-averaged norms).
    The last predictor step, to ``σ = 0``, returns the denoised mean.
    """
    x, sigmas = _check(model, x, sigmas, callback)
    snr = check_nonnegative("snr", snr)
    corrector_steps = check_int("corrector_steps", corrector_steps, minimum=0)
    for i in range(sigmas.shape[0] - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, _full(x, sigma))
        if float(sigma_next) == 0.0:
            x = denoised
        else:
            var = sigma**2 - sigma_next**2
            x = x + var * (denoised - x) / sigma**2 + var.sqrt() * _noise(x, generator)
            for _ in range(corrector_steps):
                score = (model(x, _full(x, sigma_next)) - x) / sigma_next**2
                z = _noise(x, generator)
                ratio = snr * flatten_event(z).norm(dim=-1).mean() / flatten_event(score).norm(dim=-1).mean()
                e = 2.0 * ratio**2
                x = x + e * score + (2.0 * e).sqrt() * z
        if callback is not None:
            callback(i, x, float(sigma_next), denoised)
    return x


@torch.no_grad()
def sample_annealed_langevin(model: Denoiser, x: Tensor, sigmas: Tensor, *,
                             callback: SigmaCallback | None = None, generator: torch.Generator | None = None,
                             steps_per_level: int = 100, step_lr: float = 2e-5, denoise: bool = True) -> Tensor:
    r"""Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1) over the non-zero ``sigmas``:
    ``steps_per_level`` moves ``x ← x + ½α_i s(x, σ_i) + \sqrt{α_i} z`` with ``α_i = step_lr σ_i²/σ_L²``;
    then, if ``denoise``, Tweedie's ``x ← D(x, σ_L)``.
    """
    x, sigmas = _check(model, x, sigmas, callback)
    steps_per_level = check_int("steps_per_level", steps_per_level, minimum=1)
    step_lr = check_positive("step_lr", step_lr)
    levels = sigmas[sigmas > 0]
    last = levels[-1]
    for i, sigma in enumerate(levels):
        alpha = step_lr * (sigma / last) ** 2
        for _ in range(steps_per_level):
            score = (model(x, _full(x, sigma)) - x) / sigma**2
            x = x + 0.5 * alpha * score + alpha.sqrt() * _noise(x, generator)
        if callback is not None:
            callback(i, x, float(sigma), x)
    if denoise:
        x = model(x, _full(x, last))
    return x


KARRAS_SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "euler": sample_euler,
    "heun": sample_heun,
    "euler-ancestral": sample_euler_ancestral,
    "dpm++2m": sample_dpmpp_2m,
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
    from probgen._checks import check_choice

    method = check_choice("method", method, tuple(KARRAS_SAMPLERS))
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    sigmas = karras_sigmas(steps, model.sigma_min, model.sigma_max, rho=rho, device=device, dtype=dtype)
    x = torch.randn(shape, generator=generator, device=device, dtype=dtype) * model.sigma_max
    return KARRAS_SAMPLERS[method](model, x, sigmas, callback=callback, generator=generator, **options)
